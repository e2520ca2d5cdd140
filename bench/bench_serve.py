"""Throughput of `samplecnn serve` on loopback against Tagger.run_files in one process.

    .venv/bin/python bench/bench_serve.py [--seconds 60] [--concurrency 1,4,16] [--work-dir /tmp/samplecnn-bench-serve]

Uses bench_predict.py's run directory (the scd spec, default SE model with 128 features;
trained once and cached in --work-dir) and its 200 one-second 16-kHz WAVs. Starts `python -m
samplecnn serve` on a free 127.0.0.1 port and, for each concurrency level, keeps that many
clients (threads with keep-alive connections) posting one WAV per request to /v1/predict for
--seconds (after a 5-s warm-up at the highest level). Right before and after each level,
while the server is idle, it measures tagger.run_files over the same files in this process
(median of 2 passes each): the machine is shared, so each level is compared with the
run_files rate of its own minutes. Prints requests/s, p50/p95 latency, errors and the ratio
of the server's files/s to run_files' per level, and the CPU time per file of the server
process, of the clients and of run_files (robust to the machine's load, unlike the rates);
writes serve-results.json to --work-dir.
Loopback only; every loop is bounded by its time.
"""
import argparse
import http.client
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid

from samplecnn.inference import Tagger

from bench_predict import audio_files, tag_all, trained_run  # beside this script
from bench_train import LoadWatch, log, machine

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(name, data):
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(run_dir, work_dir, flags):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "samplecnn", "serve", str(run_dir), "--port", str(port),
                                "--log-dir", str(work_dir / "serve-log"), "--data-dir", str(work_dir / "data"), *flags],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.5)
    process.kill()
    sys.exit("the server did not answer within 300 s")


def load(port, bodies, concurrency, seconds):
    """Latencies (s) of the requests that succeeded and the error count of ``concurrency``
    clients posting ``bodies`` in turn for ``seconds``."""
    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = index
        while time.monotonic() < deadline:
            body, content_type = bodies[i % len(bodies)]
            i += concurrency
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/predict", body, {"Content-Type": content_type})
                response = connection.getresponse()
                answer = json.loads(response.read())
                ok = response.status == 200 and answer["files"][0]["error"] is None
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[0] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_files_rate(tagger, paths, passes=2):
    """(median files/s, CPU ms per file) of ``passes`` tagger.run_files passes over ``paths``
    (the server is idle meanwhile)."""
    cpu = own_cpu_seconds()
    rates = [tag_all(tagger, paths)["files_per_s"] for _ in range(passes)]
    return statistics.median(rates), 1000 * (own_cpu_seconds() - cpu) / (passes * len(paths))


def markdown(results):
    lines = [results["machine"], "",
             f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in results['loadavg'])}, "
             f"at the end: {', '.join(f'{x:.2f}' for x in results['loadavg_end'])}; other processes used "
             f"{results['foreign_cores']:.2f} cores on average during the run.", "",
             f"Model: {results['model']}. Each level is compared with Tagger.run_files in one process, measured "
             "just before and just after it (2 passes each, the mean of their medians).", "",
             "| clients | requests | requests/s | p50 ms | p95 ms | errors | run_files files/s before, after "
             "| of run_files | server CPU ms / file | client CPU ms / file | run_files CPU ms / file |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for level in results["levels"]:
        lines.append(f"| {level['concurrency']} | {level['requests']} | {level['rps']:.1f} | {level['p50_ms']:.0f} "
                     f"| {level['p95_ms']:.0f} | {level['errors']} | {level['run_files_before']:.1f}, "
                     f"{level['run_files_after']:.1f} | {level['ratio']:.0%} | {level['server_cpu_ms']:.1f} "
                     f"| {level['client_cpu_ms']:.1f} | {level['run_files_cpu_ms']:.1f} |")
    return "\n".join(lines)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("/tmp/samplecnn-bench-serve"))
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--serve-flag", action="append", default=[],
                        help="a flag for samplecnn serve (repeatable), e.g. --serve-flag=--batch-wait-ms=10")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    watch = LoadWatch()
    log(f"load average {watch.loadavg}; preparing the run directory and files in {args.work_dir}")
    run_dir = trained_run(args.work_dir)
    paths = audio_files(args.work_dir, "A", quick=False)
    bodies = [multipart(p.name, p.read_bytes()) for p in paths]

    tagger = Tagger.from_run(run_dir)
    tag_all(tagger, paths)  # warm-up

    process, port = start_server(run_dir, args.work_dir, args.serve_flag)
    try:
        load(port, bodies, max(levels), 5.0)  # warm-up: the model's batch shapes
        measured = []
        for concurrency in levels:
            before, cpu_before = run_files_rate(tagger, paths)
            start, server_cpu, client_cpu = time.perf_counter(), process_cpu_seconds(process.pid), own_cpu_seconds()
            latencies, errors = load(port, bodies, concurrency, args.seconds)
            elapsed = time.perf_counter() - start
            server_ms = 1000 * (process_cpu_seconds(process.pid) - server_cpu) / max(len(latencies), 1)
            client_ms = 1000 * (own_cpu_seconds() - client_cpu) / max(len(latencies), 1)
            after, cpu_after = run_files_rate(tagger, paths)
            rps = len(latencies) / elapsed
            measured.append({"concurrency": concurrency, "requests": len(latencies), "errors": errors, "rps": rps,
                             "p50_ms": 1000 * percentile(latencies, 0.5), "p95_ms": 1000 * percentile(latencies, 0.95),
                             "run_files_before": before, "run_files_after": after,
                             "ratio": rps / ((before + after) / 2), "server_cpu_ms": server_ms,
                             "client_cpu_ms": client_ms, "run_files_cpu_ms": (cpu_before + cpu_after) / 2})
            log(f"  {concurrency} clients: {rps:.1f} requests/s, {errors} errors; run_files {before:.1f} and "
                f"{after:.1f} files/s around it")
    finally:
        process.terminate()
        process.wait(60)
    model = tagger.config["model"]
    results = {"machine": machine(), "loadavg": watch.loadavg, "serve_flags": args.serve_flag, "loadavg_end": os.getloadavg(),
               "foreign_cores": watch.foreign_cores(), "seconds": args.seconds, "run_dir": str(run_dir),
               "model": f"scd {model['block']}, {model['init_features']} features, "
                        f"{tagger.model.count_params():,} parameters; {len(paths)} one-second 16-kHz WAVs",
               "levels": measured}
    (args.work_dir / "serve-results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
