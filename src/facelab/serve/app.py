"""The app factory: :func:`create_app` builds the FastAPI service from :class:`ServeSettings`.

Layers of one request, outermost first: request id → security headers (CSP) → access log and
metrics → CORS (only when origins are configured) → API-key check (before the body is read) →
body-size limit → FastAPI routes, whose errors all become the envelope
(:mod:`facelab.serve.errors`). Models load in a background thread at start-up; until they are
ready ``/v1/health`` answers 503 ``not_ready``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from facelab.serve.auth import KeyStore
from facelab.serve.cursors import CursorSigner
from facelab.serve.errors import RequestIdMiddleware, install_error_handlers
from facelab.serve.metrics import ServiceMetrics
from facelab.serve.middleware import AccessLogMiddleware, BodyLimitMiddleware, SecurityHeadersMiddleware
from facelab.serve.pool import InferencePool
from facelab.serve.routes import ROUTERS
from facelab.serve.security import AuthMiddleware
from facelab.serve.settings import ServeSettings
from facelab.serve.state import ServiceState
from facelab.version import __version__

__all__ = ["create_app", "STATIC_DIR"]

_logger = logging.getLogger("facelab.serve")

#: The web app's files (served from the package only; no client-chosen paths).
STATIC_DIR = Path(__file__).with_name("static")


def _load_models(state: ServiceState) -> None:
    from facelab.pipeline import FaceAnalyzer
    from facelab.runtime.session import RuntimeOptions

    settings = state.settings
    try:
        if state.analyzer is None:
            runtime = RuntimeOptions(intra_op_threads=settings.threads)
            modules = ["all", "liveness"] if settings.liveness else None
            state.analyzer = FaceAnalyzer(
                settings.pack, modules=modules, runtime=runtime, max_pixels=settings.max_pixels
            )
        if settings.require_live:
            from facelab.gallery.enroll import analyzer_liveness

            state.liveness_check = analyzer_liveness
        if state.gallery is None:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
            state.gallery = _open_gallery(settings.gallery)
        if state.gallery:
            from facelab.serve.jobs import JobManager

            state.jobs = JobManager(state)
        state.ready = True
        _logger.info(
            "facelab serve ready: pack %s, gallery %s", state.analyzer.pack_name, state.settings.public()["gallery"]
        )
    except Exception as exc:  # noqa: BLE001 - reported by /v1/health and the log
        state.load_error = f"{type(exc).__name__}: {exc}"
        _logger.exception("facelab serve could not load its models")


def _open_gallery(url: str) -> Any:
    from facelab.gallery import Gallery

    return Gallery.open(url)


def create_app(settings: ServeSettings | None = None, *, analyzer: Any = None, gallery: Any = None) -> FastAPI:
    """Build the service.

    Args:
        settings: the configuration (default: :meth:`ServeSettings.from_env`).
        analyzer: a ready :class:`~facelab.pipeline.FaceAnalyzer` to share (default: load ``settings.pack``).
        gallery: an open gallery to use (default: open ``settings.gallery``).

    Returns:
        The FastAPI app; ``app.state.facelab`` is its :class:`~facelab.serve.state.ServiceState`.
    """
    settings = settings or ServeSettings.from_env()
    metrics = ServiceMetrics()
    state = ServiceState(
        settings=settings,
        keys=KeyStore(settings.data_dir),
        cursors=CursorSigner(settings.data_dir),
        pool=InferencePool(settings.workers, settings.queue, settings.retry_after_s),
        metrics=metrics,
        analyzer=analyzer,
        gallery=gallery,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if settings.auth and not state.keys.has_active():
            _logger.warning(
                "auth is on and no API key exists: every call but /v1/health is refused; "
                "create one with `facelab serve keys create --name NAME --scope admin --data-dir %s`",
                settings.data_dir,
            )
        loader = threading.Thread(target=_load_models, args=(state,), name="facelab-load", daemon=True)
        loader.start()
        yield
        if state.jobs is not None:
            state.jobs.close()
        state.pool.shutdown()
        close = getattr(state.gallery, "close", None)
        if close is not None:
            close()

    app = FastAPI(
        title="facelab",
        version=__version__,
        description="Face detection, recognition and 1:N search over a persistent gallery.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.facelab = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/assets", StaticFiles(directory=STATIC_DIR), name="assets")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # Added innermost first: the last one added runs first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        AuthMiddleware,
        keys=state.keys,
        enabled=settings.auth,
        rate_limit=settings.rate_limit,
        retry_after_s=settings.retry_after_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
