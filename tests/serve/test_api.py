"""samplecnn serve: the REST API of a real server on a loopback port, against the library's own results."""
import functools
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest

import rawdata
from scripts import ENV, REPO, run_samplecnn
from servers import Server, wait_for

TOKEN = "test-token-123"
SMALL_JOB = {"init_features": 8, "batch_size": 8, "num_readers": 2, "block": "basic", "mixed_precision": False}


@pytest.fixture(scope="module")
def server(trained, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    running = Server(trained[0], "--log-dir", root / "log", "--data-dir", data_dir, "--token", TOKEN,
                     "--max-upload-mb", 1, "--max-unpacked-mb", 2, "--allow-urls", tmp_dir=root / "tmp", token=TOKEN)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A WAV of class 1, the same audio as MP3, a 3-s WAV of class 2, and a zip of two clips and a broken file."""
    folder = tmp_path_factory.mktemp("clips")
    audio = rawdata.tone(1.0, 16000, rawdata.class_frequency(4), seed=7)
    wav = rawdata.write_wav(folder / "one.wav", audio, 16000)
    mp3 = rawdata.write_encoded(folder / "one.mp3", audio, 16000)
    long = rawdata.write_wav(folder / "long.wav", rawdata.tone(3.0, 22050, rawdata.class_frequency(8), seed=3), 22050)
    zipped = folder / "set.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(wav, "a/one.wav")
        z.write(long, "b/long.wav")
        z.writestr("b/broken.wav", b"RIFF this is not audio")
    return {"wav": wav, "mp3": mp3, "long": long, "zip": zipped}


def tagger_scores(tagger, path, window=None, hop=None):
    (result,) = tagger.run_files([path], window, hop)
    return [p.scores for p in result.predictions]


def api_scores(row, classes):
    return [np.array([w["scores"][c] for c in classes]) for w in row["predictions"]]


def test_predict_wav_mp3_zip_equal_the_tagger(server, tagger, clips):
    files = [(p.name, p.read_bytes()) for p in (clips["wav"], clips["mp3"], clips["zip"])]
    status, answer, _ = server.upload("/v1/predict?top_k=2", files)
    assert status == 200, answer
    rows = {row["path"]: row for row in answer["files"]}
    assert list(rows) == ["one.wav", "one.mp3", "set.zip/a/one.wav", "set.zip/b/broken.wav", "set.zip/b/long.wav"]
    expected = {"one.wav": clips["wav"], "one.mp3": clips["mp3"], "set.zip/a/one.wav": clips["wav"],
                "set.zip/b/long.wav": clips["long"]}
    for name, path in expected.items():
        (got,), (want,) = api_scores(rows[name], tagger.classes), tagger_scores(tagger, path)
        assert np.abs(got - want).max() <= 1e-6, name
        assert rows[name]["error"] is None
        assert [c for c, _ in rows[name]["predictions"][0]["top"]] == [tagger.top(want, 2)[0][0],
                                                                       tagger.top(want, 2)[1][0]]
    assert "broken.wav" in rows["set.zip/b/broken.wav"]["path"] and rows["set.zip/b/broken.wav"]["error"]
    assert rows["set.zip/b/broken.wav"]["predictions"] == []
    assert rows["one.wav"]["predictions"][0]["end"] == pytest.approx(1.0)


def test_predict_windows_equal_the_tagger_timeline(server, tagger, clips):
    status, answer, _ = server.upload("/v1/predict?window=1&hop=0.5", [("long.wav", clips["long"].read_bytes())])
    assert status == 200, answer
    (row,) = answer["files"]
    got, want = api_scores(row, tagger.classes), tagger_scores(tagger, clips["long"], 1.0, 0.5)
    assert len(got) == len(want) == 5
    assert max(np.abs(g - w).max() for g, w in zip(got, want)) <= 1e-6
    assert [w["start"] for w in row["predictions"]] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_predict_equals_predict_py_json(server, trained, clips, tmp_path):
    output = tmp_path / "x.json"
    result = subprocess.run([sys.executable, str(REPO / "predict.py"), str(trained[0]), str(clips["wav"]),
                             "--output", str(output)], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (cli_row,) = json.loads(output.read_text())["predictions"]
    status, answer, _ = server.upload("/v1/predict", [("one.wav", clips["wav"].read_bytes())])
    (api_row,) = answer["files"][0]["predictions"]
    assert max(abs(api_row["scores"][c] - s) for c, s in cli_row["scores"].items()) <= 1e-6
    assert [c for c, _ in api_row["top"]] == [c for c, _ in cli_row["top"]]


def test_embed_json_and_npy_equal_the_tagger(server, tagger, clips):
    (want,) = tagger.embed(str(clips["wav"]))
    status, answer, _ = server.upload("/v1/embed", [("one.wav", clips["wav"].read_bytes())])
    assert status == 200, answer
    got = np.array(answer["files"][0]["embeddings"][0]["features"])
    assert got.shape == want.features.shape and np.abs(got - want.features).max() <= 1e-5
    status, data, headers = server.upload("/v1/embed?format=npy", [("one.wav", clips["wav"].read_bytes())])
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    table = np.load(io.BytesIO(data))
    assert list(table["name"]) == ["one.wav"] and np.abs(table["features"][0] - want.features).max() <= 1e-5
    status, answer, _ = server.upload("/v1/embed?layer=nope", [("one.wav", clips["wav"].read_bytes())])
    assert status == 422 and "has no layer 'nope'" in answer["detail"]


def test_every_request_needs_the_token(server):
    status, answer, headers = server.request("GET", "/v1/model", token=False)
    assert status == 401 and "Authorization: Bearer" in answer["detail"] and headers["www-authenticate"] == "Bearer"
    assert server.request("GET", "/v1/model", headers={"Authorization": "Bearer wrong"}, token=False)[0] == 401
    status, answer, _ = server.request("GET", "/v1/model")
    assert status == 200 and answer["classes"] == ["class0", "class1", "class2"]
    assert answer["train"]["block"] == "rese2" and 0 <= answer["test"]["accuracy"] <= 1


def written_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_hostile_uploads_are_refused_and_nothing_is_left(server, clips, tmp_path_factory):
    server_tmp = tmp_path_factory.getbasetemp()
    before = written_files(server_tmp)
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as z:
        z.write(clips["wav"], "ok.wav")
        z.writestr("../../evil.wav", b"x")
    status, answer, _ = server.upload("/v1/predict", [("slip.zip", slip.getvalue())])
    assert status == 400 and "'../../evil.wav'" in answer["detail"] and "'..'" in answer["detail"]
    linked = io.BytesIO()
    with tarfile.open(fileobj=linked, mode="w") as t:
        link = tarfile.TarInfo("a.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    status, answer, _ = server.upload("/v1/predict", [("link.tar", linked.getvalue())])
    assert status == 400 and "is a link" in answer["detail"]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.wav", bytes(3 << 20))  # 3 MB of zeros: a few kB packed, over --max-unpacked-mb 2
    assert len(bomb.getvalue()) < 100_000
    status, answer, _ = server.upload("/v1/predict", [("bomb.zip", bomb.getvalue())])
    assert status == 413 and "--max-unpacked-mb" in answer["detail"]
    status, answer, _ = server.upload("/v1/predict", [("big.wav", bytes(2 << 20))])
    assert status == 413 and "--max-upload-mb" in answer["detail"]
    status, answer, _ = server.upload("/v1/predict", [(f"{i}.wav", b"x") for i in range(101)])
    assert status == 413 and "--max-files" in answer["detail"]
    status, answer, _ = server.request("POST", "/v1/predict", b"not multipart", {"Content-Type": "text/plain"})
    assert status == 415 and "multipart/form-data" in answer["detail"]
    status, answer, _ = server.request("POST", "/v1/predict?top_k=0", b"")
    assert status == 422 and answer["detail"][0]["loc"] == ["query", "top_k"]
    status, answer, _ = server.request("POST", "/v1/predict?hop=1", b"")
    assert status == 422 and "hop needs window" in answer["detail"]
    # Nothing was written outside the per-request folders, and those are gone.
    assert list(server.tmp_dir.iterdir()) == []
    assert [p for p in written_files(server_tmp) if p.name in ("evil.wav", "big.wav", "a.wav")] == []
    assert [p for p in written_files(server_tmp) if p not in before and p.suffix != ".log"] == []


def test_urls_are_fetched_over_http_only(server, tagger, clips):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clips["wav"].parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as files_server:
        threading.Thread(target=files_server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{files_server.server_address[1]}/one.wav"
        status, answer, _ = server.request("POST", "/v1/predict", {"url": url})
        files_server.shutdown()
    assert status == 200, answer
    (want,) = tagger_scores(tagger, clips["wav"])
    assert answer["files"][0]["path"] == url
    assert np.abs(api_scores(answer["files"][0], tagger.classes)[0] - want).max() <= 1e-6
    status, answer, _ = server.request("POST", "/v1/predict", {"url": "file:///etc/passwd"})
    assert status == 400 and "only http:// and https://" in answer["detail"]


def test_job_values_are_checked_naming_the_field(server):
    cases = [({"dataset": "nope"}, "dataset", "not built"), ({"dataset": "tones", "lr": -1}, "lr", "positive"),
             ({"dataset": "tones", "block": "nope"}, "block", "not registered"),
             ({"dataset": "tones", "epochs": 3}, "epochs", "Extra inputs"),
             ({"dataset": "tones", "log_dir": "/"}, "log_dir", "Extra inputs"),
             ({"dataset": "tones", "name": "../x"}, "name", "pattern"),
             ({"dataset": "tones", "batch_size": "many"}, "batch_size", "integer")]
    for body, field, words in cases:
        status, answer, _ = server.request("POST", "/v1/jobs", body)
        assert status == 422, (body, answer)
        assert answer["detail"][0]["loc"] == ["body", field] and words in answer["detail"][0]["msg"], answer


def test_jobs_fail_with_their_message_finish_and_are_served(server, data_dir):
    status, broken, _ = server.request("POST", "/v1/jobs", {"dataset": "broken", **SMALL_JOB})
    assert status == 201 and broken["status"] == "running"
    status, job, _ = server.request("POST", "/v1/jobs", {"dataset": "tones", "name": "short", "num_stages": 1,
                                                         "max_epochs": 1, **SMALL_JOB})
    assert status == 201 and job["status"] == "queued"  # --max-jobs 1: it waits for the first
    failed = wait_for(lambda: (view := server.request("GET", f"/v1/jobs/{broken['id']}")[1])["status"] == "failed"
                      and view, timeout=90)
    assert "is missing; repair the data set with" in failed["error"] and failed["run_dir"] is None
    assert server.request("POST", f"/v1/jobs/{broken['id']}/resume")[0] == 409
    done = wait_for(lambda: (view := server.request("GET", f"/v1/jobs/{job['id']}")[1])["status"] in
                    ("finished", "failed") and view, timeout=240)
    assert done["status"] == "finished", done
    assert done["epoch"] == 1 and done["latest"]["epoch"] == 1 and "val_loss" in done["latest"]
    assert done["run_dir"].endswith("-tones-short") and (data_dir / "tones").is_dir()
    assert 0 <= done["results"]["test"]["accuracy"] <= 1
    assert server.request("DELETE", f"/v1/jobs/{job['id']}")[0] == 409
    status, model, _ = server.request("POST", "/v1/models/load", {"run": job["id"]})
    assert status == 200 and model["path"] == done["run_dir"] and model["train"]["block"] == "basic"
    assert server.request("GET", "/v1/model")[1]["path"] == done["run_dir"]
    listed = server.request("GET", "/v1/jobs")[1]["jobs"]
    assert [j["id"] for j in listed] == [job["id"], broken["id"]]


def test_openapi_documents_every_field(server):
    status, schema, _ = server.request("GET", "/openapi.json")
    assert status == 200
    undocumented = [f"{name}.{field}" for name, body in schema["components"]["schemas"].items()
                    if name not in ("HTTPValidationError", "ValidationError")
                    for field, spec in body.get("properties", {}).items() if not spec.get("description")]
    assert undocumented == []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), (method, path)
            for parameter in operation.get("parameters", []):
                assert parameter.get("description") or parameter["in"] == "path", (path, parameter["name"])


def test_serve_refuses_bad_starts_in_one_line(trained, tmp_path):
    result = run_samplecnn("serve", trained[0], "--host", "0.0.0.0")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --host 0.0.0.0")
    assert "--token" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_samplecnn("serve", tmp_path / "missing")
    assert result.returncode == 2 and "model not found" in result.stderr
    blocked = ("import sys; sys.modules['fastapi'] = None; sys.argv = ['samplecnn', 'serve', sys.argv[1]]; "
               "from samplecnn.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", blocked, str(trained[0])], env=ENV, capture_output=True,
                            text=True)
    assert result.returncode == 2 and "pip install 'samplecnn[serve]'" in result.stderr
    result = run_samplecnn("serve", "-h")
    assert result.returncode == 0 and "--[no]allow-urls" in result.stdout and "--max-upload-mb" in result.stdout
