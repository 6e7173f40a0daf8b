"""
The HTTP service behind `dualsight serve`: a FastAPI app that scores uploaded images through the same `Predictor`
as `dualsight predict` (images of concurrent requests share forward passes), records every decision in the
prediction history, and answers every refusal with a JSON error that names its cause.
"""

import asyncio
import hashlib
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from ..inference.provenance import read_provenance
from ..models.images import ImageLoadError, ImageTooLargeError, max_image_pixels
from ..models.pipeline import UNCERTAIN
from .batching import MicroBatcher
from .history import History, HistoryUnavailable, as_json
from .keys import ApiKeys
from .metrics import ServiceMetrics

#: Media types a file part may declare; anything else is refused with 415 (an empty type is read as a file).
ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")


@dataclass
class ServiceSettings:
    """
    How `dualsight serve` runs.

    Args:
        model (`str`, *optional*): a model folder, Hub id or "mobile"; the default model when `None` (see
            `default_model.resolve_model`).
        database_url (`str`, *optional*, defaults to `"dualsight-history.sqlite3"`): where the history lives: a
            file path (SQLite) or a SQLAlchemy URL such as `postgresql://user@host/db`.
        api_key_file (`str`, *optional*): `CLIENT_ID:KEY` lines (see `keys.ApiKeys`); without it, no key is asked
            for (the command line allows that only on a loopback address).
        open_reads (`bool`, *optional*, defaults to `False`): let anyone read the history (`GET /v1/predictions`).
        store_images (`str`, *optional*): keep each scored image's bytes in this folder, named by sha256; they are
            not kept otherwise.
        max_batch_size (`int`, *optional*, defaults to 16): images per forward pass.
        max_wait_ms (`float`, *optional*, defaults to 5.0): how long a batch waits for more images.
        max_upload_bytes (`int`, *optional*, defaults to 20 MiB): the largest image file accepted.
        max_images_per_request (`int`, *optional*, defaults to 16): the most image files in one request.
        max_pixels (`int`, *optional*): the decoding limit (default `images.max_image_pixels()`).
        dtype (`str`, *optional*, defaults to `"auto"`): inference precision, as for `dualsight predict`.
        top_k (`int`, *optional*, defaults to 3): object labels per image.
        allow_pickle (`bool`, *optional*, defaults to `False`): accept pickle weights.
        evidence (`str`, *optional*, defaults to `"both"`): `"both"` reads each upload's provenance (a validly signed
            AI claim decides, see `provenance.decide`); `"pixels"` the pixels only.
    """

    model: str | None = None
    database_url: str = "dualsight-history.sqlite3"
    api_key_file: str | None = None
    open_reads: bool = False
    store_images: str | None = None
    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 20 * 2**20
    max_images_per_request: int = 16
    max_pixels: int | None = None
    dtype: str = "auto"
    top_k: int = 3
    allow_pickle: bool = False
    evidence: str = "both"


class Feedback(BaseModel):
    """The body of `POST /v1/feedback`."""

    prediction_id: str = Field(max_length=36, description="the id that /v1/predict returned")
    label: str = Field(max_length=64, description="the correct authenticity label, one of the model's classes")
    reviewer: str | None = Field(None, max_length=256, description="who says so")
    note: str | None = Field(None, max_length=2048)


class ServiceError(Exception):
    """A refusal: answered as `{"error": {"status", "cause", "message"}}` with the HTTP status."""

    def __init__(self, status: int, cause: str, message: str):
        self.status, self.cause, self.message = status, cause, message
        super().__init__(message)

    def as_dict(self) -> dict:
        return {"status": self.status, "cause": self.cause, "message": self.message}


def model_revision(model: str, config) -> str | None:
    """What identifies the exact weights: the Hub commit, or for a folder the sha256 (first 16 hex digits) of its
    safetensors files."""
    folder = Path(model)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(2**20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]
    return getattr(config, "_commit_hash", None)


def _one_line_validation(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(settings: ServiceSettings | None = None, predictor=None) -> FastAPI:
    """
    The service as an ASGI app (run it with uvicorn, or `dualsight serve`).

    Args:
        settings ([`ServiceSettings`], *optional*): defaults to `ServiceSettings()`.
        predictor ([`Predictor`], *optional*): a model already loaded; by default one is loaded from
            `settings.model` when the app starts.

    Example:

    ```python
    >>> import tempfile
    >>> from fastapi.testclient import TestClient
    >>> from dualsight_hf.serve import ServiceSettings, create_app
    >>> app = create_app(ServiceSettings(database_url=tempfile.mkdtemp() + "/history.sqlite3"))
    >>> with TestClient(app) as client:  # loads the default model, opens the history
    ...     answer = client.post("/v1/predict", files={"file": open("examples/real/coffee.png", "rb")})
    >>> answer.json()["results"][0]["label"]
    'real'
    ```
    """
    settings = settings or ServiceSettings()
    keys = ApiKeys.from_file(settings.api_key_file) if settings.api_key_file else None
    metrics = ServiceMetrics()
    bearer = HTTPBearer(auto_error=False)
    max_pixels = settings.max_pixels or max_image_pixels()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from ..inference.predictor import Predictor
        from ..models.default_model import resolve_model
        from ..models.pipeline import decision_threshold

        state = app.state
        state.predictor = predictor or await run_in_threadpool(
            Predictor, settings.model, batch_size=settings.max_batch_size, dtype=settings.dtype, top_k=settings.top_k,
            num_workers=0, allow_pickle=settings.allow_pickle, evidence=settings.evidence)
        config = state.predictor.model.config
        state.model = {"id": settings.model or "dualsight_hf default model",
                       "revision": model_revision(resolve_model(settings.model), config)}
        state.threshold = float(decision_threshold(config))
        state.history = await run_in_threadpool(History, settings.database_url)
        state.batcher = MicroBatcher(state.predictor.score, settings.max_batch_size, settings.max_wait_ms,
                                     on_batch=metrics.batch_size.observe)
        state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            state.history.dispose()

    app = FastAPI(title="DualSight", version=_version(), lifespan=lifespan,
                  description="Tells AI-generated images from real photographs and names the objects in them. "
                              "Every decision is recorded in the prediction history.")
    app.state.metrics = metrics

    def refuse(error: ServiceError) -> JSONResponse:
        metrics.errors.labels(error.cause).inc()
        return JSONResponse({"error": error.as_dict()}, status_code=error.status)

    @app.exception_handler(ServiceError)
    async def service_error(_request, error: ServiceError):
        return refuse(error)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_request, error: RequestValidationError):
        return refuse(ServiceError(422, "bad_parameter", _one_line_validation(error)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error: StarletteHTTPException):
        cause = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return refuse(ServiceError(error.status_code, cause, str(error.detail)))

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def caller(credentials: HTTPAuthorizationCredentials | None) -> str | None:
        if keys is None:
            return None
        client = keys.client(credentials.credentials if credentials else None)
        if client is None:
            raise ServiceError(401, "unauthorized", "a valid API key is needed (Authorization: Bearer KEY)")
        return client

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str | None:
        return caller(credentials)

    def reader(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str | None:
        return None if settings.open_reads else caller(credentials)

    async def read_form(request: Request):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ServiceError(415, "unsupported_media_type", f"expected multipart/form-data with image files, "
                                                              f"got {content_type or 'no content type'}")
        length = request.headers.get("content-length", "")
        limit = settings.max_images_per_request * (settings.max_upload_bytes + 2**16)
        if length.isdigit() and int(length) > limit:
            raise ServiceError(413, "too_large", f"request of {int(length)} bytes is over the limit of {limit} "
                                                 f"({settings.max_images_per_request} images of at most "
                                                 f"{settings.max_upload_bytes} bytes)")
        try:
            form = await request.form(max_files=settings.max_images_per_request, max_fields=100)
        except (MultiPartException, StarletteHTTPException) as error:  # Starlette turns the first into a 400
            message = getattr(error, "detail", None) or str(error)
            if "too many files" in message.lower():
                raise ServiceError(413, "too_many_images", f"more than {settings.max_images_per_request} images in "
                                                           "one request") from None
            raise ServiceError(400, "bad_request", f"unreadable multipart body ({message})") from None
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not uploads:
            raise ServiceError(422, "bad_parameter", "no image files in the request (send them as multipart file "
                                                     "fields, e.g. curl -F file=@photo.jpg)")
        return uploads

    async def prepare(upload: UploadFile, index: int) -> dict:
        """Read one uploaded file: its facts, and its model inputs or the refusal."""
        name = upload.filename or f"file-{index}"
        item = {"index": index, "file_name": name, "size_bytes": upload.size}
        part_type = (upload.content_type or "").lower()
        try:
            if upload.size is not None and upload.size > settings.max_upload_bytes:
                raise ServiceError(413, "too_large", f"{name}: {upload.size} bytes is over the limit of "
                                                     f"{settings.max_upload_bytes} bytes per image")
            if part_type and not part_type.startswith(ACCEPTED_PART_TYPES):
                raise ServiceError(415, "unsupported_media_type", f"{name}: {part_type} is not an image type")
            data = await upload.read()
            item.update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)
            item["inputs"] = await run_in_threadpool(app.state.predictor.prepare, data, name, max_pixels)
            if settings.evidence != "pixels":
                item["provenance"] = await run_in_threadpool(read_provenance, data)
        except ImageTooLargeError as error:
            item["error"] = ServiceError(413, "too_large", str(error))
        except ImageLoadError as error:
            item["error"] = ServiceError(400, "unreadable_image", str(error))
        except ServiceError as error:
            item["error"] = error
        return item

    def store(item: dict) -> str:
        folder = Path(settings.store_images) / item["sha256"][:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (item["sha256"] + (Path(item["file_name"]).suffix.lower() or ".bin"))
        if not path.exists():  # named by content: the same image twice is stored once
            temporary = path.with_suffix(path.suffix + ".partial")
            temporary.write_bytes(item["data"])
            temporary.replace(path)
        return str(path)

    @app.post("/v1/predict", summary="Score one or several images (multipart file fields)")
    async def predict(request: Request, client: Annotated[str | None, Depends(writer)],
                      head: Annotated[Literal["authenticity", "objects", "both"], Query()] = "both"):
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        uploads = await read_form(request)
        items = await asyncio.gather(*(prepare(upload, i) for i, upload in enumerate(uploads)))
        good = [item for item in items if "error" not in item]
        answers = await asyncio.gather(*(app.state.batcher.submit(item["inputs"]) for item in good))
        latency_ms = (time.perf_counter() - started) * 1000
        created_at = datetime.now(timezone.utc)
        rows = []
        for item, answer in zip(good, answers):
            answer = item["answer"] = app.state.predictor.with_provenance(answer, item.get("provenance"))
            rows.append({
                "id": str(uuid.uuid4()), "created_at": created_at, "request_id": request_id,
                "image_index": item["index"], "client_id": client,
                "sha256": item["sha256"], "file_name": item["file_name"], "size_bytes": item["size_bytes"],
                "model_id": app.state.model["id"], "model_revision": app.state.model["revision"],
                "label": answer["label"], "score": answer["score"], "uncertain": answer["label"] == UNCERTAIN,
                "decision_threshold": app.state.threshold, "authenticity": answer["authenticity"],
                "objects": answer["objects"], "latency_ms": latency_ms,
                "stored_image": await run_in_threadpool(store, item) if settings.store_images else None,
                "provenance": answer["provenance"], "decided_by": answer["decided_by"],
            })
            item["id"] = rows[-1]["id"]
        try:
            await run_in_threadpool(app.state.history.record, rows)
        except HistoryUnavailable as error:
            raise ServiceError(503, "database_unavailable", f"nothing was recorded, try again: {error}") from None
        results = []
        for item in items:
            result = {"index": item["index"], "file_name": item["file_name"], "sha256": item.get("sha256")}
            if "error" in item:
                metrics.errors.labels(item["error"].cause).inc()
                result["error"] = item["error"].as_dict()
            else:
                answer = item["answer"]
                metrics.images.labels(answer["label"]).inc()
                result.update(id=item["id"], error=None)
                if head in ("authenticity", "both"):
                    result.update(label=answer["label"], score=answer["score"],
                                  uncertain=answer["label"] == UNCERTAIN, authenticity=answer["authenticity"],
                                  provenance=answer["provenance"], decided_by=answer["decided_by"])
                if head in ("objects", "both"):
                    result["objects"] = answer["objects"]
            results.append(result)
        body = {"request_id": request_id, "model": app.state.model, "decision_threshold": app.state.threshold,
                "results": results, "failed": len(items) - len(good)}
        status = 200 if good else items[0]["error"].status
        return JSONResponse(body, status_code=status)

    @app.post("/v1/feedback", summary="A reviewer's correct label for a recorded prediction", status_code=201)
    async def give_feedback(correction: Feedback, client: Annotated[str | None, Depends(writer)]):
        labels = list(app.state.predictor.model.config.label2id)
        if correction.label not in labels:
            raise ServiceError(422, "bad_parameter", f"label: {correction.label!r} is not one of {', '.join(labels)}")
        try:
            entry = await run_in_threadpool(app.state.history.record_feedback, correction.prediction_id,
                                            correction.label, client, correction.reviewer, correction.note)
        except KeyError:
            raise ServiceError(404, "not_found", f"no prediction {correction.prediction_id}") from None
        except HistoryUnavailable as error:
            raise ServiceError(503, "database_unavailable", f"nothing was recorded, try again: {error}") from None
        return JSONResponse(as_json(entry), status_code=201)

    @app.get("/v1/predictions/{prediction_id}", summary="One recorded prediction")
    async def prediction(prediction_id: str, _client: Annotated[str | None, Depends(reader)]):
        row = await _read(app.state.history.get, prediction_id)
        if row is None:
            raise ServiceError(404, "not_found", f"no prediction {prediction_id}")
        return as_json(row)

    @app.get("/v1/predictions", summary="Recorded predictions, newest first, filtered and paged")
    async def predictions(_client: Annotated[str | None, Depends(reader)], label: str | None = None,
                          since: datetime | None = None, until: datetime | None = None, model: str | None = None,
                          sha256: Annotated[str | None, Query(pattern="^[0-9a-fA-F]{64}$")] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                          offset: Annotated[int, Query(ge=0)] = 0):
        rows = await _read(app.state.history.search, label, since, until, model, sha256, limit + 1, offset)
        return {"items": [as_json(row) for row in rows[:limit]], "limit": limit, "offset": offset,
                "next_offset": offset + limit if len(rows) > limit else None}

    async def _read(function, *args):
        try:
            return await run_in_threadpool(function, *args)
        except HistoryUnavailable as error:
            raise ServiceError(503, "database_unavailable", str(error)) from None

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and the history database answers")
    async def readyz():
        database = await run_in_threadpool(app.state.history.ping)
        body = {"model": app.state.model, "database": "ok" if database else "unavailable"}
        return JSONResponse(body, status_code=200 if database else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _version() -> str:
    from .. import __version__

    return __version__
