"""The HTTP API of ``dart serve`` (FastAPI): one :class:`~dart.detector.Detector` behind a bounded, batching queue.

- ``POST /v1/detect`` (multipart): ``image`` (a file) or ``url`` (only when the server allows URLs), ``classes``
  (comma-separated entries, as ``--classes``; default: the server's vocabulary), ``conf``, ``nms``, ``masks``.
  Answers exactly the JSON ``dart detect`` writes for an image (``image`` is the upload's file name).
- ``GET /``: a page to try it in a browser (pick or drop an image, type classes, move the threshold, download the
  JSON; plain HTML and JavaScript, ``page.html``);
- ``GET /v1/health``: ``{"status": "ok"}`` (no key needed); ``GET /v1/info``: model fingerprint, backend, device,
  precision, image size, default classes and the server's limits.
- Errors are ``{"error": "one sentence"}``: 400 for a bad image, 401 for a missing or wrong API key, 413 for an
  upload or image over the limits, 422 for bad parameters, 503 with ``Retry-After`` when the queue is full.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import File, Form, Request, UploadFile  # module level: FastAPI reads the endpoints' annotations here

from dart.classes import normalize_classes, parse_vocabulary, split_entries
from dart.errors import DartError, InputError
from dart.serve.batcher import Batcher, Busy, Settings

MB = 1024 * 1024


@dataclass
class ServeConfig:
    """The server's limits and policies (the flags of ``dart serve``)."""

    classes: list[str] = field(default_factory=list)  # the default vocabulary
    conf: float = 0.3
    nms: float | None = 0.7
    masks: bool = False
    max_batch: int = 4
    max_wait_ms: float = 5.0
    queue_size: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)  # none: CORS off
    allow_urls: bool = False  # fetch images from URLs given by clients (off: the server never makes requests)


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def create_app(detector: Any, config: ServeConfig | None = None):
    """The FastAPI app serving ``detector`` (its batcher starts now; ``app.state.batcher`` stops on shutdown)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from dart import __version__
    from dart.backends.base import describe_backend
    from dart.images import result_json

    config = config or ServeConfig()
    if config.classes:
        detector.set_classes(list(config.classes))  # the default vocabulary is encoded (and checked) at start
    batcher = Batcher(detector, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                      queue_size=config.queue_size)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="dart", version=__version__, lifespan=lifespan,
                  description="SAM3 as a multi-class open-vocabulary detector. POST an image to /v1/detect.")
    app.state.batcher, app.state.config, app.state.detector = batcher, config, detector
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    @app.exception_handler(_Refused)
    async def refused(_request, exc: _Refused):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "the request"
        return _error(422, f"{where}: {str(first.get('msg', 'is not valid')).rstrip('.')}.")

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise _Refused(401, "this server needs its API key: send it as the X-API-Key header (or Authorization: "
                                "Bearer KEY).")

    @app.get("/", include_in_schema=False)
    async def page():
        from importlib.resources import files

        from fastapi.responses import HTMLResponse

        return HTMLResponse((files("dart.serve") / "page.html").read_text(encoding="utf-8"))

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> dict[str, Any]:
        check_key(request)
        backend = detector.backend
        limits = {k: v for k, v in asdict(config).items() if k not in ("api_key", "classes", "cors_origins")}
        return {"dart_version": __version__, "fingerprint": backend.fingerprint, **describe_backend(backend),
                "imgsz": backend.imgsz, "classes": list(config.classes), "limits": limits}

    @app.post("/v1/detect")
    async def detect(request: Request, image: UploadFile | None = File(None), url: str | None = Form(None),
                     classes: str | None = Form(None), conf: float | None = Form(None),
                     nms: float | None = Form(None), masks: bool | None = Form(None)) -> dict[str, Any]:
        check_key(request)
        entries, vocab = _vocabulary(classes, config)
        settings = Settings(tuple(entries), _unit(conf, config.conf, "conf"), _unit(nms, config.nms, "nms"),
                            config.masks if masks is None else bool(masks))
        if settings.masks and not detector.backend.supports_masks:
            raise _Refused(422, f"masks: the {detector.backend.name} backend of this server has no mask output.")
        name, data = await _read_image(image, url, config)
        array = _decode(data, name, config)
        try:
            future = batcher.submit(array, settings)
        except Busy:
            raise _Refused(503, "the server is busy (its request queue is full); retry shortly.",
                           {"Retry-After": "1"}) from None
        try:
            dets = await asyncio.wrap_future(future)
        except DartError as exc:
            raise _Refused(422 if isinstance(exc, InputError) else 500, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the client gets a sentence; the server keeps serving
            raise _Refused(500, f"the detector failed on this image ({type(exc).__name__}: {exc}).") from None
        # from the request's vocabulary: by now the detector may hold another one
        return result_json(name, array.shape[:2], vocab.names, dets, vocab.class_labels)

    return app


def _vocabulary(text: str | None, config: ServeConfig):
    """``(entries, Vocabulary)`` of the request's classes (comma-separated entries, as ``--classes``), else of the
    server's."""
    if text is None or not text.strip():
        if not config.classes:
            raise _Refused(422, "classes: this server has no default classes; send classes=person,car,...")
        entries = list(config.classes)
    else:
        try:
            entries = normalize_classes(split_entries(text))
        except InputError as exc:
            raise _Refused(422, f"classes: {exc}") from None
    try:
        vocab = parse_vocabulary(entries)
    except InputError as exc:
        raise _Refused(422, f"classes: {exc}") from None
    return entries, vocab


def _unit(value: float | None, default: float | None, name: str) -> float | None:
    if value is None:
        return default
    if not 0.0 <= value <= 1.0:
        raise _Refused(422, f"{name} must be between 0 and 1, got {value}.")
    return float(value)


async def _read_image(upload, url: str | None, config: ServeConfig) -> tuple[str, bytes]:
    limit = int(config.max_upload_mb * MB)
    if upload is not None and url:
        raise _Refused(422, "send an image file or a url, not both.")
    if upload is not None:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _Refused(413, f"the upload is larger than this server's limit of {config.max_upload_mb:g} MB.")
        return upload.filename or "upload", data
    if url:
        if not config.allow_urls:
            raise _Refused(422, "url: this server does not fetch images from URLs (start it with --allow-urls); "
                                "upload the image instead.")
        return url, await asyncio.to_thread(_fetch, url, limit, config.max_upload_mb)
    raise _Refused(422, "image: send an image file (multipart field 'image') or a url.")


def _fetch(url: str, limit: int, limit_mb: float) -> bytes:
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise _Refused(422, "url: only http(s) URLs are fetched.")
    try:
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310 - http(s) only, checked above
            data = response.read(limit + 1)
    except OSError as exc:
        raise _Refused(400, f"url: the image could not be fetched ({type(exc).__name__}).") from None
    if len(data) > limit:
        raise _Refused(413, f"url: the image is larger than this server's limit of {limit_mb:g} MB.")
    return data


def _decode(data: bytes, name: str, config: ServeConfig) -> np.ndarray:
    import cv2

    if not data:
        raise _Refused(400, f"the image '{name}' is empty.")
    array = np.frombuffer(data, dtype=np.uint8)
    header = cv2.imdecode(array, cv2.IMREAD_REDUCED_GRAYSCALE_8)  # 1/64 of the pixels: the size before decoding
    if header is None:
        raise _Refused(400, f"'{name}' is not an image OpenCV can read (the file is corrupt or of another format).")
    if (header.shape[0] - 1) * (header.shape[1] - 1) * 64 > config.max_pixels:
        raise _Refused(413, f"'{name}' has about {header.shape[1] * 8}x{header.shape[0] * 8} pixels, more than this "
                            f"server's limit of {config.max_pixels:,}.")
    image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if image is None:
        raise _Refused(400, f"'{name}' is not an image OpenCV can read (the file is corrupt or of another format).")
    if image.shape[0] * image.shape[1] > config.max_pixels:
        raise _Refused(413, f"'{name}' has {image.shape[1]}x{image.shape[0]} pixels, more than this server's limit of "
                            f"{config.max_pixels:,}.")
    return image
