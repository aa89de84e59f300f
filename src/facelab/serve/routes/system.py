"""``/v1/health``, ``/v1/system``, ``/v1/models`` and ``/metrics``."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from facelab.serve.errors import RECENT_ERRORS, envelope, request_id_of
from facelab.serve.schemas import HealthResponse
from facelab.serve.state import ServiceState, get_state
from facelab.version import __version__

router = APIRouter()


@router.get("/v1/health", response_model=HealthResponse, tags=["system"])
def health(request: Request, state: Annotated[ServiceState, Depends(get_state)]) -> Any:
    """Readiness: 200 ``ready`` once the models are loaded, else 503 ``not_ready`` (no key needed)."""
    body = {"status": "ready", "auth_enabled": state.settings.auth, "version": __version__}
    if not state.ready:
        return JSONResponse(
            envelope("not_ready", "the service is still loading its models", {}, request_id_of(request)),
            status_code=503,
        )
    return body


def _model_summary(state: ServiceState) -> list[dict[str, Any]]:
    fa = state.analyzer
    if fa is None:
        return []
    out = []
    for task, card in fa.cards.items():
        runner = fa.models.get(task)
        session = getattr(runner, "session", None)
        out.append(
            {
                "task": task,
                "name": card.name,
                "arch": card.arch,
                "license": card.license,
                "files": [{"filename": f.filename, "sha256": f.sha256} for f in card.files],
                "input_size": list(card.input_size) if card.input_size else None,
                "embedding_dim": card.embedding_dim,
                "providers": list(getattr(session, "providers", []) or []),
            }
        )
    return out


@router.get("/v1/models", tags=["system"])
def models(state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """The loaded pack: models, licences, execution providers and the same-person threshold."""
    state.require_ready()
    fa = state.analyzer
    return {"pack": fa.pack_name, "threshold": fa.threshold, "models": _model_summary(state)}


@router.get("/v1/system", tags=["system"])
def system(state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """Diagnostics (admin): platform, runtime, models, gallery counts, safe settings, recent errors."""
    try:
        import onnxruntime as ort

        runtime = {"onnxruntime": ort.__version__, "available_providers": ort.get_available_providers()}
    except ImportError:  # pragma: no cover - the cpu/gpu extra is required to serve
        runtime = {"onnxruntime": None, "available_providers": []}
    gallery = None
    if state.gallery is not None and hasattr(state.gallery, "info"):
        try:
            gallery = state.gallery.info()
        except Exception as exc:  # noqa: BLE001 - diagnostics must not fail
            gallery = {"error": type(exc).__name__}
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "uptime_s": round(time.time() - state.started_at, 1),
        "runtime": runtime,
        "ready": state.ready,
        "pack": None if state.analyzer is None else state.analyzer.pack_name,
        "models": _model_summary(state),
        "pool": {"workers": state.pool.workers, "limit": state.pool.limit, "depth": state.pool.depth},
        "gallery": gallery,
        "settings": state.settings.public(),
        "recent_errors": [{"status": s, "code": c, "path": p} for s, c, p in list(RECENT_ERRORS)],
    }


@router.get("/metrics", include_in_schema=False)
def metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    """Prometheus text exposition (admin)."""
    state.metrics.queue_depth.set(state.pool.depth)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
