"""samplecnn serve: a training job outlives a server restart, is cancelled with Ctrl-C and resumed."""
from servers import Server, wait_for

LONG_JOB = {"dataset": "tones", "num_stages": 1, "max_epochs": 50, "patience": 50, "init_features": 8,
            "batch_size": 8, "num_readers": 2, "block": "basic"}


def job_view(server, job_id):
    status, view, _ = server.request("GET", f"/v1/jobs/{job_id}")
    assert status == 200, view
    return view


def test_job_survives_a_restart_is_cancelled_and_resumed(trained, data_dir, tmp_path):
    args = (trained[0], "--log-dir", tmp_path / "log", "--data-dir", data_dir)
    first = Server(*args, tmp_dir=tmp_path / "tmp")
    try:
        status, job, _ = first.request("POST", "/v1/jobs", LONG_JOB)
        assert status == 201, job
        wait_for(lambda: (job_view(first, job["id"])["epoch"] or 0) >= 1, timeout=240)
        status, answer, _ = first.request("POST", "/v1/predict", {"url": "http://127.0.0.1:1/x.wav"})
        assert status == 403 and "--allow-urls" in answer["detail"]
    finally:
        first.stop()

    second = Server(*args, tmp_dir=tmp_path / "tmp")
    try:
        view = job_view(second, job["id"])  # found again in the log directory, still training
        assert view["status"] == "running" and view["run_dir"].startswith(str(tmp_path / "log"))
        assert view["eta_seconds"] > 0 and view["elapsed_seconds"] > 0 and view["latest"]["loss"] > 0
        epoch = wait_for(lambda: (e := job_view(second, job["id"])["epoch"]) > view["epoch"] and e, timeout=240)

        status, cancelled, _ = second.request("DELETE", f"/v1/jobs/{job['id']}")
        assert status == 200
        cancelled = wait_for(lambda: (v := job_view(second, job["id"]))["status"] == "cancelled" and v, timeout=120)
        assert any("continue with: python train.py --resume" in line for line in cancelled["output_tail"])
        assert cancelled["epoch"] >= epoch and cancelled["error"] is None

        status, resumed, _ = second.request("POST", f"/v1/jobs/{job['id']}/resume")
        assert status == 200 and resumed["status"] == "running" and resumed["run_dir"] == view["run_dir"]
        wait_for(lambda: job_view(second, job["id"])["epoch"] > cancelled["epoch"], timeout=240)
        second.request("DELETE", f"/v1/jobs/{job['id']}")
        final = wait_for(lambda: (v := job_view(second, job["id"]))["status"] == "cancelled" and v, timeout=120)
        assert final["epoch"] > cancelled["epoch"]
    finally:
        second.stop()
