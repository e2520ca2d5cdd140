"""Serves a trained model: REST API, web page and API docs on one HTTP server.

  samplecnn serve RUN_DIR_OR_CHECKPOINT [--host 127.0.0.1] [--port 8000] [--log-dir ./log] [--data-dir ./data]

Open http://HOST:PORT/ for the page and /docs for the API. Binding an address other than
loopback needs --token (or SAMPLECNN_TOKEN): every /v1 request must then send
`Authorization: Bearer TOKEN`. Training jobs run train.py in --log-dir on data sets of --data-dir.
"""
import ipaddress
import os
import socket

from absl import flags

from samplecnn.cli import UsageError, flag, run

flags.DEFINE_string("host", "127.0.0.1", "Address to bind; anything but loopback needs --token.")
flags.DEFINE_integer("port", 8000, "TCP port.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("log-dir", "./log", "Where training jobs write their run directories (and the job list).")
flags.DEFINE_string("data-dir", "./data", "Data root of the data sets training jobs can use.")
flags.DEFINE_string("token", None, "Require 'Authorization: Bearer TOKEN' on every /v1 request (default: "
                    "$SAMPLECNN_TOKEN).")
flags.DEFINE_float("max-upload-mb", 200, "Largest request body, in MB.", lower_bound=0)
flags.DEFINE_integer("max-files", 100, "Most audio files per request (archive members included).", lower_bound=1)
flags.DEFINE_float("max-unpacked-mb", 1000, "Largest total size of the audio unpacked from archives per request, "
                   "in MB.", lower_bound=0)
flags.DEFINE_boolean("allow-urls", False, "Let /v1/predict and /v1/embed fetch an http(s) URL given as JSON "
                     "{\"url\": ...}.")
flags.DEFINE_float("url-timeout", 30, "Seconds allowed to fetch a URL.", lower_bound=0)
flags.DEFINE_integer("max-batch", 64, "Most segments per model call, gathered from concurrent requests.",
                     lower_bound=1)
flags.DEFINE_float("batch-wait-ms", 10, "Most time a model call waits for the segments of other requests in "
                   "progress to share it (a lone request never waits).", lower_bound=0)
flags.DEFINE_integer("max-jobs", 1, "Trainings that run at once; later jobs are queued.", lower_bound=1)

EXTRA_MODULES = ("fastapi", "uvicorn", "python_multipart", "fastapi_offline")


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --port "
                             "or --host") from None


def main(argv):
    import importlib.util

    if len(argv) != 2:
        raise UsageError("usage: samplecnn serve RUN_DIR_OR_CHECKPOINT [--host H] [--port P] [--log-dir D] "
                         "[--data-dir D]")
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"samplecnn serve needs the serve extra ({', '.join(missing)} missing): "
                         "pip install 'samplecnn[serve]' (or pip install -e '.[serve]' in a checkout)")
    token = flag("token") or os.environ.get("SAMPLECNN_TOKEN") or None
    if not is_loopback(flag("host")) and not token:
        raise UsageError(f"--host {flag('host')} is reachable from other machines: give --token (or set "
                         "SAMPLECNN_TOKEN) so that only clients with it get in, or keep --host 127.0.0.1")
    from samplecnn import inference
    from samplecnn.models import PluginError

    try:
        inference.model_config(argv[1])
    except (FileNotFoundError, ValueError, OSError, PluginError) as error:
        raise UsageError(str(error)) from None
    check_port_free(flag("host"), flag("port"))

    import uvicorn

    from samplecnn.serve import app, uploads

    limits = uploads.Limits(max_upload_bytes=int(flag("max-upload-mb") * uploads.MB), max_files=flag("max-files"),
                            max_unpacked_bytes=int(flag("max-unpacked-mb") * uploads.MB),
                            allow_urls=flag("allow-urls"), url_timeout=flag("url-timeout"))
    settings = app.Settings(model=argv[1], log_dir=flag("log-dir"), data_dir=flag("data-dir"), token=token,
                            limits=limits, max_batch=flag("max-batch"), batch_wait=flag("batch-wait-ms") / 1000,
                            max_jobs=flag("max-jobs"))
    try:
        application = app.create_app(settings)
    except (FileNotFoundError, ValueError, OSError, PluginError) as error:
        raise UsageError(str(error)) from None
    print(f"serving {argv[1]} on http://{flag('host')}:{flag('port')}/ (API docs: /docs; Ctrl-C stops)", flush=True)
    uvicorn.run(application, host=flag("host"), port=flag("port"), log_level="warning")
    return 0


def run_cli():
    run(__name__)
