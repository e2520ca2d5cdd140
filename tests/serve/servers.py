"""A real ``samplecnn serve`` on a free loopback port, and a small HTTP client for it."""
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from scripts import ENV, REPO


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m samplecnn serve MODEL ARGS`` in a subprocess, with TMPDIR set to ``tmp_dir``."""

    def __init__(self, model, *args, tmp_dir, token=None):
        self.port, self.token, self.tmp_dir = free_port(), token, tmp_dir
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**ENV, "TMPDIR": str(tmp_dir)}
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.output = open(tmp_dir.parent / f"server-{self.port}.log", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", str(model), "--port",
                                         str(self.port), *map(str, args)], cwd=REPO, env=env,
                                        stdout=self.output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/v1/health")[0] == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not answer within 180 s: {self.log()[-3000:]}")

    def log(self):
        self.output.seek(0)
        return self.output.read()

    def request(self, method, path, body=None, headers=None, token=True, timeout=120):
        """(status, parsed JSON or raw bytes, headers) of one request."""
        headers = dict(headers or {})
        if token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, (dict, list)):
            body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, data, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, data, answer_headers = error.code, error.read(), error.headers
        if answer_headers.get("content-type", "").startswith("application/json"):
            data = json.loads(data)
        return status, data, answer_headers

    def upload(self, path, files, **kwargs):
        """POST ``files`` ([(name, bytes)]) as multipart file parts named 'file'."""
        body, content_type = multipart(files)
        return self.request("POST", path, body, {"Content-Type": content_type}, **kwargs)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()


def multipart(files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def wait_for(condition, timeout, interval=0.5):
    """The first truthy value of ``condition()`` within ``timeout`` seconds (AssertionError if none)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s; last value {value!r}")
        time.sleep(interval)
