"""The FastAPI application of ``samplecnn serve``: REST API, web page and offline API docs."""
import contextlib
import dataclasses
import hmac
import json
import pathlib
import tempfile
import threading
from typing import Literal, Optional

from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from samplecnn import inference, training, writers
from samplecnn.audio import AudioDecodeError
from samplecnn.models import list_blocks
from samplecnn.recipes import list_recipes
from samplecnn.serve import jobs, schemas, uploads
from samplecnn.serve.batching import BatchingTagger
from samplecnn.serve.uploads import RequestError

STATIC = pathlib.Path(__file__).parent / "static"

UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "Audio files (any format ffmpeg reads) or .zip/.tar* archives of them."}}}},
    "application/json": {"schema": {"type": "object", "required": ["url"], "properties": {"url": {
        "type": "string", "description": "An http(s) URL of one audio file or archive (only with --allow-urls)."}}}},
}}}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``samplecnn serve`` is started with."""

    model: str
    log_dir: str = "./log"
    data_dir: str = "./data"
    token: Optional[str] = None
    limits: uploads.Limits = uploads.Limits()
    max_batch: int = 64
    batch_wait: float = 0.01
    max_jobs: int = 1


class ServedModel:
    """The model being served: loaded once, its calls batched across requests."""

    def __init__(self, path, settings):
        tagger = inference.Tagger.load(path)
        self.path = str(path)
        self.tagger = BatchingTagger(tagger, settings.max_batch, settings.batch_wait)
        folder = pathlib.Path(path) if pathlib.Path(path).is_dir() else pathlib.Path(path).parent
        results = folder / training.RESULTS
        self.results = json.loads(results.read_text()) if results.is_file() else None

    def info(self):
        config = self.tagger.config
        test = None if self.results is None else {k: v for k, v in self.results["test"].items()
                                                  if not isinstance(v, (dict, list))}
        return {"path": self.path, "classes": self.tagger.classes, "spec": config["spec"],
                "train": config.get("train"), "test": test}


def create_app(settings):
    """The application serving ``settings.model``; raises what Tagger.load raises for a bad model."""
    served = ServedModel(settings.model, settings)
    manager = jobs.JobManager(settings.log_dir, settings.data_dir, max_running=settings.max_jobs)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        manager.close()

    app = FastAPIOffline(title="samplecnn", version="1", lifespan=lifespan, description=(
        "Tag audio and train SampleCNN models. Upload audio to /v1/predict or /v1/embed as multipart file parts; "
        "start and follow trainings under /v1/jobs. When the server was started with a token, every /v1 request "
        "needs the header `Authorization: Bearer <token>`."))
    app.state.served = served
    load_lock = threading.Lock()
    bearer = HTTPBearer(auto_error=False, description="The server's --token (only when it was started with one).")
    api = APIRouter(prefix="/v1", dependencies=[Security(bearer)])

    @app.middleware("http")
    async def require_token(request, call_next):
        if settings.token and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {settings.token}".encode()):
                return JSONResponse({"detail": "missing or wrong token: send the header "
                                               "'Authorization: Bearer <token>' with the server's --token"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def request_error(request, error):
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(jobs.JobError)
    async def job_error(request, error):
        detail = str(error) if error.field is None else [
            {"loc": ["body", error.field], "msg": str(error), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=error.status)

    @app.exception_handler(Exception)
    async def internal_error(request, error):  # a bug: one line for the client, never a traceback
        return JSONResponse({"detail": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/health", response_model=schemas.Health, summary="Is the server up, and which model does it serve")
    async def health():
        return {"status": "ok", "model": app.state.served.path}

    @api.get("/model", response_model=schemas.ModelInfo, summary="Classes, spec, training options and test scores")
    async def model():
        return app.state.served.info()

    def checked_window(tagger, window, hop):
        if hop is not None and window is None:
            raise RequestError(422, "hop needs window: give window (seconds) too")
        if window is not None:
            try:
                inference.window_samples(window, hop, tagger.sample_rate)
            except ValueError as error:
                raise RequestError(422, str(error).replace("--", "")) from None

    async def received(request, folder):
        saved = await uploads.receive(request, folder, settings.limits)
        return await run_in_threadpool(uploads.expand, saved, folder, settings.limits)

    def run(tagger, found, window, hop, layer=None):
        """(display name, FileResult) of every file, and the inputs that failed before decoding.

        Files are decoded in the request's own thread, one after another: requests run in
        parallel threads already, and more threads per request only contend for the cores."""
        results = []
        with tagger.traffic.request():
            for path in found.files:
                name = found.name(path)
                try:
                    predictions = (tagger.embed(path, layer, window, hop) if layer else
                                   tagger.timeline(path, window, hop))
                except (AudioDecodeError, OSError, ValueError) as error:  # what Tagger.run_files reports per file
                    results.append((name, inference.FileResult(name, error=str(error))))
                    continue
                for prediction in predictions:
                    prediction.path = name
                results.append((name, inference.FileResult(name, predictions)))
        return results, found.failures

    @api.post("/predict", response_model=schemas.PredictResponse, openapi_extra=UPLOAD_BODY,
              summary="Tag uploaded audio files or archives (or a URL with --allow-urls)")
    async def predict(request: Request,
                      top_k: int = Query(5, ge=1, description="Classes listed in `top` per file or window."),
                      threshold: Optional[float] = Query(None, ge=0, le=1, description=(
                          "List every class at or above this probability (multi-label models default to the data "
                          "set's threshold).")),
                      window: Optional[float] = Query(None, gt=0, description="Predict every window of this many "
                                                                              "seconds (a timeline)."),
                      hop: Optional[float] = Query(None, gt=0, description="Seconds between window starts "
                                                                           "(default: the window).")):
        served = app.state.served
        tagger = served.tagger
        checked_window(tagger, window, hop)
        with tempfile.TemporaryDirectory(prefix="samplecnn-request-") as folder:
            found = await received(request, pathlib.Path(folder))
            results, failures = await run_in_threadpool(run, tagger, found, window, hop)
        files = [{"path": f["path"], "error": f["error"], "predictions": []} for f in failures]
        for name, result in results:
            rows = [{**writers.prediction_row(p, tagger.classes, top_k),
                     "above_threshold": tagger.above_threshold(p.scores, threshold)}
                    for p in result.predictions or []]
            files.append({"path": name, "error": result.error, "predictions": rows})
        return {"model": served.path, "files": files}

    @api.post("/embed", response_model=schemas.EmbedResponse, openapi_extra=UPLOAD_BODY,
              responses={200: {"content": {"application/octet-stream": {}},
                               "description": "JSON, or with format=npy a structured NumPy array (name, timeStamp, "
                                              "end, features) as predict.py --embeddings writes it."}},
              summary="Embeddings of uploaded audio from a layer, as JSON or .npy")
    async def embed(request: Request,
                    layer: Optional[str] = Query(None, description="Layer to take features from (default: the "
                                                                   "layer before the classifier)."),
                    window: Optional[float] = Query(None, gt=0, description="One vector per window of this many "
                                                                            "seconds."),
                    hop: Optional[float] = Query(None, gt=0, description="Seconds between window starts."),
                    format: Literal["json", "npy"] = Query("json", description="json, or npy for a NumPy file.")):
        tagger = app.state.served.tagger
        checked_window(tagger, window, hop)
        try:
            layer = layer or inference.EMBEDDING_LAYER
            await run_in_threadpool(tagger.feature_model, layer)
        except ValueError as error:
            raise RequestError(422, str(error)) from None
        with tempfile.TemporaryDirectory(prefix="samplecnn-request-") as folder:
            found = await received(request, pathlib.Path(folder))
            results, failures = await run_in_threadpool(run, tagger, found, window, hop, layer)
            if format == "npy":
                rows = [p for _, r in results for p in r.predictions or []]
                if not rows:
                    raise RequestError(422, "no file could be decoded: " + "; ".join(
                        f"{f['path']}: {f['error']}" for f in [*failures, *({"path": n, "error": r.error}
                                                                              for n, r in results)]))
                target = pathlib.Path(folder) / "embeddings.npy"
                writers.write_embeddings(target, rows)
                failed = [{"path": n, "error": r.error} for n, r in results if r.error] + failures
                return Response(target.read_bytes(), media_type="application/octet-stream", headers={
                    "Content-Disposition": 'attachment; filename="embeddings.npy"',
                    "X-Failed-Files": json.dumps(failed)})
        files = [{"path": f["path"], "error": f["error"], "embeddings": []} for f in failures]
        for name, result in results:
            files.append({"path": name, "error": result.error, "embeddings": [
                {"start": p.start, "end": p.end, "features": p.features.tolist()} for p in result.predictions or []]})
        return {"layer": layer, "files": files}

    @api.get("/training-options", response_model=schemas.TrainingOptions,
             summary="Data sets, blocks and recipes a job can use, and the defaults of every field")
    async def training_options():
        defaults = {name: None if field.default is dataclasses.MISSING else field.default
                    for name, field in jobs.FIELDS.items()}
        return {"datasets": jobs.built_datasets(settings.data_dir), "blocks": list_blocks(),
                "recipes": list_recipes(), "defaults": defaults}

    @api.get("/jobs", response_model=schemas.JobList, summary="Every training job with its status and progress")
    async def list_jobs():
        ordered = sorted(manager.jobs.values(), key=lambda j: j.created, reverse=True)
        return {"jobs": [manager.describe(j) for j in ordered]}

    @api.post("/jobs", response_model=schemas.Job, status_code=201,
              summary="Start a training (train.py in a subprocess; one run directory per job)")
    async def create_job(body: schemas.TrainJobRequest):
        job = await run_in_threadpool(manager.create, body.model_dump())
        return manager.describe(job)

    @api.get("/jobs/{job_id}", response_model=schemas.Job, summary="Status and progress of one job")
    async def get_job(job_id: str):
        return manager.describe(manager.get(job_id))

    @api.delete("/jobs/{job_id}", response_model=schemas.Job,
                summary="Cancel a job (Ctrl-C: it stops after saving, and can be resumed)")
    async def cancel_job(job_id: str):
        return manager.describe(manager.cancel(job_id))

    @api.post("/jobs/{job_id}/resume", response_model=schemas.Job,
              summary="Resume a cancelled or failed job from its last epoch (train.py --resume)")
    async def resume_job(job_id: str):
        return manager.describe(await run_in_threadpool(manager.resume, job_id))

    @api.post("/models/load", response_model=schemas.ModelInfo, summary="Serve another finished run")
    async def load_model(body: schemas.LoadModel):
        run_dir = finished_run(body.run)
        with load_lock:
            app.state.served = await run_in_threadpool(ServedModel, str(run_dir), settings)
        return app.state.served.info()

    def finished_run(name):
        """The run directory of a job id or of a run name in --log-dir, if it finished."""
        if name in manager.jobs:
            folder = manager.jobs[name].run_dir
        elif "/" in name or "\\" in name or name in ("", ".", ".."):
            raise RequestError(422, f"run {name!r}: give a job id or the name of a run directory in --log-dir, "
                                "not a path")
        else:
            folder = pathlib.Path(settings.log_dir) / name
        if not folder or not pathlib.Path(folder).is_dir():
            raise RequestError(404, f"no run {name!r} in {settings.log_dir} and no job with that id")
        if training.Run(folder).final_checkpoint() is None:
            raise RequestError(409, f"run {name!r} has not finished (no final-*.h5 checkpoint yet)")
        return folder

    app.include_router(api)
    return app

