"""Training jobs: each is ``samplecnn train`` in a subprocess, so each is an ordinary run directory.

The job list lives in ``LOG_DIR/.samplecnn-jobs/jobs.json`` (with each job's console output
beside it), so a restarted server finds its jobs again, including those still training:
the subprocesses run in sessions of their own and outlive the server. Status comes from
the process and the run directory (state.json, log.csv, results.json).
"""
import csv
import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time
import uuid

from samplecnn import pipeline, training
from samplecnn.models import list_blocks
from samplecnn.records import write_text_atomic

JOBS_DIR = ".samplecnn-jobs"
REGISTRY = "jobs.json"
QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
ENDED = (FINISHED, FAILED, CANCELLED)
SERVER_OPTIONS = ("data_dir", "log_dir")
"""TrainConfig fields the server sets (its --data-dir and --log-dir), not the client."""
NOT_A_JOB = ("fold",)
"""TrainConfig fields a job cannot take: a fold run belongs to a cross-validation (train.py --cv),
a parent of runs, while a job is one run."""
FIELDS = {f.name: f for f in dataclasses.fields(training.TrainConfig) if f.name not in SERVER_OPTIONS + NOT_A_JOB}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class JobError(Exception):
    """A request about jobs that cannot be done: ``status`` is the HTTP status, ``field`` the
    TrainConfig field at fault (if one is)."""

    def __init__(self, status, message, field=None):
        super().__init__(message)
        self.status, self.field = status, field


def validate(values, data_dir):
    """The TrainConfig fields of a job, checked with the library's own rules; raises JobError
    (422, naming the field) for an unknown data set or block or a value no run can use."""
    values = {k: v for k, v in values.items() if v is not None}
    manifest = pipeline.dataset_dir(data_dir, values["dataset"]) / "manifest.json"
    if not manifest.is_file():
        raise JobError(422, f"data set {values['dataset']!r} is not built in the server's data folder "
                            f"({data_dir}); built: {', '.join(built_datasets(data_dir)) or 'none'}", "dataset")
    if values.get("block", "se") not in list_blocks():
        raise JobError(422, f"block {values['block']!r} is not registered; choose from {', '.join(list_blocks())}",
                       "block")
    for name, (accepts, expected) in training.VALUE_RULES.items():
        if name in values and not accepts(values[name]):
            raise JobError(422, f"must be {expected}, got {values[name]!r}", name)
    if values.get("strategy") == "multi_worker":
        raise JobError(422, "multi_worker needs TF_CONFIG on every worker: start such runs with train.py",
                       "strategy")
    try:
        training.TrainConfig(**values)
    except ValueError as error:  # rules that involve two fields
        raise JobError(422, str(error)) from None
    return values


def built_datasets(data_dir):
    """Names of the data sets built in ``data_dir`` (those with a manifest)."""
    root = pathlib.Path(data_dir)
    return sorted(p.parent.parent.name for p in root.glob("*/tfrecord/manifest.json")) if root.is_dir() else []


def train_command(values, data_dir, log_dir, run_name):
    """The ``samplecnn train`` command line of a new job."""
    options = []
    for name, value in values.items():
        if name in ("dataset", "name"):
            continue
        flag = name.replace("_", "-")
        options.append(f"--{flag}" if value is True else f"--no{flag}" if value is False else f"--{flag}={value}")
    return [sys.executable, "-m", "samplecnn", "train", values["dataset"], run_name, f"--data-dir={data_dir}",
            f"--log-dir={log_dir}", *options]


@dataclasses.dataclass
class Job:
    """What the registry keeps of a job; everything else is read from its run directory."""

    id: str
    config: dict
    created: float
    status: str = QUEUED
    run_name: str = ""
    run_dir: str = None
    pid: int = None
    started: float = None
    ended: float = None
    error: str = None
    cancel_requested: bool = False
    resume: bool = False  # the next start continues run_dir


def _alive(pid):
    """True while ``pid`` is a process of ours (not a zombie, nor a recycled pid of another program)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = pathlib.Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if " Z" in (proc / "stat").read_text().rsplit(")", 1)[-1][:3]:
                return False
            return b"samplecnn" in (proc / "cmdline").read_bytes()
        except OSError:
            return False
    return True


def _csv_rows(path):
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class JobManager:
    """Starts, watches, cancels and resumes training jobs; at most ``max_running`` at a time."""

    def __init__(self, log_dir, data_dir, max_running=1, poll=0.5, cancel_grace=20.0):
        self.log_dir, self.data_dir = pathlib.Path(log_dir).resolve(), pathlib.Path(data_dir).resolve()
        self.folder = self.log_dir / JOBS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_running, self.cancel_grace = max_running, cancel_grace
        self._lock = threading.RLock()
        self._processes = {}  # job id: Popen, for the jobs this server started
        self.jobs = self._load()
        self._stop = threading.Event()
        self.refresh()
        threading.Thread(target=self._watch, args=(poll,), name="samplecnn-jobs", daemon=True).start()

    # The registry.

    def _load(self):
        path = self.folder / REGISTRY
        if not path.is_file():
            return {}
        return {item["id"]: Job(**item) for item in json.loads(path.read_text())}

    def _save(self):
        write_text_atomic(self.folder / REGISTRY, json.dumps([dataclasses.asdict(j) for j in self.jobs.values()],
                                                             indent=1))

    def output_path(self, job):
        return self.folder / f"{job.id}.log"

    # Requests.

    def create(self, values):
        values = validate(values, self.data_dir)
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            job = Job(job_id, values, time.time(), run_name=values.get("name") or f"job-{job_id}")
            self.jobs[job_id] = job
            self._save()
            self._start_queued()
        return job

    def get(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(404, f"no job {job_id!r}; GET /v1/jobs lists them")
        return job

    def cancel(self, job_id):
        """Queued: cancelled at once. Running: Ctrl-C (SIGINT), so train.py saves and prints how to
        resume; SIGTERM if it has not ended after the grace period."""
        with self._lock:
            job = self.get(job_id)
            if job.status in ENDED:
                raise JobError(409, f"job {job_id} has already ended ({job.status})")
            job.cancel_requested = True
            if job.status == QUEUED:
                job.status, job.ended = CANCELLED, time.time()
            else:
                self._signal(job, signal.SIGINT)
                timer = threading.Timer(self.cancel_grace, self._terminate, args=(job, job.pid))
                timer.daemon = True
                timer.start()
            self._save()
        return job

    def resume(self, job_id):
        """Queues a cancelled or failed job again; it continues its run directory with train.py --resume."""
        with self._lock:
            job = self.get(job_id)
            if job.status not in (CANCELLED, FAILED):
                raise JobError(409, f"job {job_id} is {job.status}: only a cancelled or failed job can be resumed")
            if not job.run_dir or not (pathlib.Path(job.run_dir) / training.STATE).is_file():
                raise JobError(409, f"job {job_id} ended before its first epoch, so there is nothing to resume; "
                                    "start a new job")
            job.status, job.resume, job.cancel_requested, job.error, job.ended = QUEUED, True, False, None, None
            self._save()
            self._start_queued()
        return job

    # Processes.

    def _start_queued(self):
        running = sum(1 for j in self.jobs.values() if j.status == RUNNING)
        for job in sorted(self.jobs.values(), key=lambda j: j.created):
            if job.status == QUEUED and running < self.max_running:
                self._start(job)
                running += 1

    def _start(self, job):
        import subprocess

        command = (train_command(job.config, self.data_dir, self.log_dir, job.run_name) if not job.resume else
                   [sys.executable, "-m", "samplecnn", "train", f"--resume={job.run_dir}"])
        with open(self.output_path(job), "a") as output:
            output.write(f"$ {' '.join(command)}\n")
            output.flush()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._processes[job.id] = process
        job.status, job.pid, job.started, job.ended = RUNNING, process.pid, time.time(), None
        self._save()

    def _signal(self, job, number):
        if job.pid and _alive(job.pid):
            try:
                os.kill(job.pid, number)
            except ProcessLookupError:
                pass

    def _terminate(self, job, pid):
        with self._lock:
            if job.status == RUNNING and job.pid == pid:
                self._signal(job, signal.SIGTERM)

    def _exited(self, job):
        """(ended, exit code or None when the process was started by an earlier server)."""
        process = self._processes.get(job.id)
        if process is not None:
            code = process.poll()
            return code is not None, code
        return not _alive(job.pid), None

    def _find_run_dir(self, job):
        """The run directory train.py made for the job: named ``*-<dataset>-<run name>[-N]``,
        created after the job started, and not another job's."""
        taken = {j.run_dir for j in self.jobs.values() if j.run_dir}
        pattern = f"*-{job.config['dataset']}-{job.run_name}"
        for path in sorted([*self.log_dir.glob(pattern), *self.log_dir.glob(pattern + "-*")]):
            if str(path) not in taken and path.is_dir() and path.stat().st_mtime >= job.started - 2:
                return str(path)
        return None

    def refresh(self):
        """Updates every running job from its process and run directory; starts queued jobs."""
        with self._lock:
            changed = False
            for job in self.jobs.values():
                if job.status != RUNNING:
                    continue
                if job.run_dir is None:
                    job.run_dir = self._find_run_dir(job)
                    changed |= job.run_dir is not None
                ended, code = self._exited(job)
                if ended:
                    self._processes.pop(job.id, None)
                    self._finish(job, code)
                    changed = True
            if changed:
                self._save()
            self._start_queued()

    def _finish(self, job, code):
        job.ended = time.time()
        run_dir = pathlib.Path(job.run_dir) if job.run_dir else None
        if run_dir and not run_dir.is_dir():
            job.run_dir = run_dir = None  # a run that fails before its first epoch leaves no directory
        if run_dir and (run_dir / training.RESULTS).is_file() and code in (0, None):
            job.status = FINISHED
        elif job.cancel_requested:
            job.status = CANCELLED
        else:
            job.status, job.error = FAILED, self._error_message(job, code)

    def _error_message(self, job, code):
        """train.py's one-line error (``error: ...``), else the last line it printed."""
        lines = [line.strip() for line in self.output_path(job).read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line and not line.startswith("$ ")]
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1][len("error: "):]
        last = lines[-1] if lines else "no output"
        return f"train.py ended{'' if code is None else f' with exit code {code}'}: {last}"

    def _watch(self, poll):
        while not self._stop.wait(poll):
            self.refresh()

    def close(self):
        """Stops watching; running trainings go on and the next server picks them up."""
        self._stop.set()

    # Views.

    def describe(self, job):
        """The job as the API shows it: status, progress from state.json and log.csv, results."""
        now = time.time()
        view = {"id": job.id, "status": job.status, "config": job.config, "run_dir": job.run_dir,
                "created": job.created, "started": job.started, "ended": job.ended, "error": job.error,
                "elapsed_seconds": None if job.started is None else (job.ended or now) - job.started,
                "stage": None, "epoch": None, "num_stages": job.config.get("num_stages", 5),
                "max_epochs": job.config.get("max_epochs", 100), "latest": None, "eta_seconds": None,
                "results": None, "output_tail": self._tail(job)}
        if not job.run_dir:
            return view
        run = training.Run(job.run_dir)
        state = run.load_state() if run.path(training.STATE).is_file() else None
        rows = _csv_rows(run.path(training.CSV_LOG))
        if state is not None:
            view["stage"], view["epoch"] = state.stage, state.epochs
        if rows:
            view["latest"] = {k: _number(v) for k, v in rows[-1].items()}
            if job.status == RUNNING and state is not None:
                seconds = [float(r["seconds"]) for r in rows if r.get("seconds")]
                left = max(0, view["num_stages"] - state.stage) * view["max_epochs"] - state.stage_epochs
                view["eta_seconds"] = sum(seconds) / len(seconds) * left if seconds else None
        if run.path(training.RESULTS).is_file():
            results = json.loads(run.path(training.RESULTS).read_text())
            view["results"] = {"test": {k: v for k, v in results["test"].items() if not isinstance(v, (dict, list))},
                               "checkpoint": results["checkpoint"], "epochs": results["epochs"],
                               "learned": results.get("learned"), "warning": results.get("warning")}
        return view

    def _tail(self, job, lines=8):
        path = self.output_path(job)
        if not path.is_file():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:]


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return value if math.isfinite(value) else None
