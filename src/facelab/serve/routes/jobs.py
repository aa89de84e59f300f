"""``/v1/index``: background indexing of the configured photo-library roots, with progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from facelab.serve.errors import ApiError
from facelab.serve.jobs import resolve_library_path
from facelab.serve.routes.gallery import _collection
from facelab.serve.state import ServiceState, get_state

router = APIRouter(tags=["index jobs"])


def _jobs(state: ServiceState) -> Any:
    state.require_ready()
    if state.jobs is None or not state.gallery:
        raise ApiError(503, "feature_unavailable", "index jobs need a gallery")
    return state.jobs


@router.get("/v1/library")
def library(state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """The photo-library roots jobs may index (by number; their server paths are not shown)."""
    roots = state.settings.library
    return {"roots": [{"root": i, "name": root.name} for i, root in enumerate(roots)]}


@router.post("/v1/index", status_code=202)
def start_index(
    state: Annotated[ServiceState, Depends(get_state)],
    body: Annotated[dict[str, Any], Body(examples=[{"collection_id": "photos", "root": 0, "paths": ["2024"]}])],
) -> dict[str, Any]:
    """Queue a job that indexes ``paths`` (folders inside library ``root``) into a collection."""
    jobs = _jobs(state)
    coll = _collection(state, str(body.get("collection_id", "")))
    paths = body.get("paths", ["."])
    root = body.get("root", 0)
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths) or len(paths) > 100:
        raise ApiError(422, "validation_error", "paths must be a list of 1-100 folder names inside the root")
    if not isinstance(root, int):
        raise ApiError(422, "validation_error", "root must be an integer")
    resolved = [resolve_library_path(state.settings.library, root, p) for p in paths]
    return jobs.submit(coll.name, paths, resolved).to_dict()


@router.get("/v1/index")
def list_jobs(state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """Recent jobs, newest first."""
    return {"jobs": [j.to_dict() for j in reversed(list(_jobs(state).jobs.values()))]}


@router.get("/v1/index/{job_id}")
def get_job(job_id: str, state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """One job's state and progress."""
    return _jobs(state).get(job_id).to_dict()


@router.delete("/v1/index/{job_id}")
def cancel_job(job_id: str, state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """Cancel a queued or running job (it stops after its current batch; what was committed stays)."""
    job = _jobs(state).get(job_id)
    job.cancel = True
    return job.to_dict()
