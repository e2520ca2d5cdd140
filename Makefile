# One-command set-up on a fresh Debian/Ubuntu machine: `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian package:command it provides (chromium and its driver run the browser tests of samplecnn serve)
SYSTEM_PACKAGES := ffmpeg:ffmpeg espeak-ng:espeak-ng chromium:chromium chromium-driver:chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo system-deps install clean

# Installs the Debian packages only when one of their commands is missing, and python3-venv
# when $(PYTHON) cannot make a virtual environment (Debian and Ubuntu ship ensurepip apart).
system-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		command -v $${entry#*:} >/dev/null || missing="$$missing $${entry%%:*}"; done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "Installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,export,serve]'
	touch $@

install: system-deps $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: install
	PY=$(PY) bash demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
