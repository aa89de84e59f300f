"""``/v1/collections/{id}/clusters``: people found by clustering a photo library, and corrections.

Thin over :mod:`facelab.gallery.cluster.store`: :func:`cluster_gallery` groups the collection's
faces (incrementally by default: only faces never clustered; ``full`` re-clusters everything while
keeping named people, pins and links), :func:`correct_gallery` applies the user's corrections so
that every later run keeps them (merge, split, move, reject).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from facelab.errors import GalleryError
from facelab.serve.errors import ApiError
from facelab.serve.routes.gallery import _collection, _gallery_errors, _person, person_out
from facelab.serve.state import ServiceState, get_state

router = APIRouter(tags=["clusters"])


def _ids(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise ApiError(422, "validation_error", f"{key} must be a non-empty list of positive integer ids")
    if len(value) > 10_000:
        raise ApiError(422, "validation_error", f"{key}: at most 10000 ids")
    return value


@contextmanager
def _clustering_errors() -> Iterator[None]:
    """A gallery error gets its usual answer (a bad setting, :class:`ConfigError`, is the app's 422 already)."""
    try:
        yield
    except GalleryError as exc:
        raise _gallery_errors(exc) from exc


def _faces_of(state: ServiceState, coll: Any, face_ids: list[int]) -> None:
    found = state.gallery.store.faces(face_ids=face_ids)
    if len(found) != len(set(face_ids)) or any(f.collection_id != coll.id for f in found):
        raise ApiError(404, "face_not_found_id", "some faces are not in this collection")


@router.get("/v1/collections/{collection_id}/clusters")
def list_clusters(
    collection_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    faces_per_person: Annotated[int, Query(ge=0, le=100)] = 12,
) -> dict[str, Any]:
    """Every person of the collection (named and unnamed), largest first, with some of their faces."""
    coll = _collection(state, collection_id)
    people = sorted(state.gallery.store.persons(coll.id), key=lambda p: (-p.face_count, p.id))
    shown: dict[int, list[Any]] = {p.id: [] for p in people}
    if faces_per_person and people:  # one read for every person's faces (in face id order)
        for f in state.gallery.store.faces(person_ids=list(shown)):
            if len(shown[f.person_id]) < faces_per_person:
                shown[f.person_id].append(f)
    out = []
    for person in people:
        item = person_out(person, coll)
        item["faces"] = [{"id": f.id, "has_crop": f.has_crop, "image_id": f.image_id} for f in shown[person.id]]
        out.append(item)
    counts = state.gallery.store.counts(coll.id)
    return {"people": out, "unassigned_faces": counts.get("faces", 0) - counts.get("assigned_faces", 0)}


@router.post("/v1/collections/{collection_id}/clusters")
async def run_clustering(
    collection_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    body: Annotated[dict[str, Any], Body(examples=[{"full": False}])],
) -> dict[str, Any]:
    """Group the collection's faces into people (``algorithm``, ``full``); corrections are kept."""
    from facelab.gallery.cluster.store import cluster_gallery

    coll = _collection(state, collection_id)
    unknown = set(body) - {"algorithm", "full"}
    if unknown:
        raise ApiError(422, "validation_error", f"unknown fields {sorted(unknown)}")
    algorithm = body.get("algorithm", "default")
    if not isinstance(algorithm, str) or len(algorithm) > 64:
        raise ApiError(422, "validation_error", "algorithm must be a name")

    def work() -> Any:
        with state.metrics.time_stage("cluster"):
            with _clustering_errors():
                return cluster_gallery(state.gallery, coll.name, algorithm=algorithm, full=bool(body.get("full")))

    done = await state.pool.run(work)
    summary = done.to_dict()
    people = state.gallery.store.counts(coll.id).get("persons", 0)
    return {
        "mode": summary["mode"],
        "faces": summary["faces"],
        "assigned_faces": summary["assigned"],
        "persons": people,
        "new_persons": summary["new_persons"],
        "reassigned_faces": summary["reassigned_faces"],
        "deleted_persons": summary["deleted_persons"],
        "algorithm": str(summary["info"].get("params", {}).get("algorithm", algorithm)),
    }


def _correct(state: ServiceState, coll: Any, corrections: list[Any]) -> dict[str, Any]:
    from facelab.gallery.cluster.store import correct_gallery

    with _clustering_errors():
        correct_gallery(state.gallery, coll.name, corrections)
    return {"applied": [c.to_dict() for c in corrections]}


def _correct_faces(
    state: ServiceState, collection_id: str, body: dict[str, Any], kind: str, other: int | None = None
) -> dict[str, Any]:
    """Apply a ``kind`` correction of a ``{person_id, face_ids}`` body, both checked to exist in the collection."""
    from facelab.gallery.cluster import Correction

    coll = _collection(state, collection_id)
    pid = body.get("person_id")
    if not isinstance(pid, int):
        raise ApiError(422, "validation_error", "person_id must be a person id")
    _person(state, coll, pid)
    faces = _ids(body, "face_ids")
    _faces_of(state, coll, faces)
    return _correct(state, coll, [Correction(kind, pid, faces=tuple(faces), other=other)])


@router.post("/v1/collections/{collection_id}/clusters/merge")
def merge(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """``{into, others}``: the others are the same person as ``into`` (kept by every later run)."""
    from facelab.gallery.cluster import Correction

    coll = _collection(state, collection_id)
    into = body.get("into")
    if not isinstance(into, int):
        raise ApiError(422, "validation_error", "into must be a person id")
    others = _ids(body, "others")
    for pid in [into, *others]:
        _person(state, coll, pid)
    # Correction refuses a person merged into itself (ConfigError: 422 validation_error)
    return _correct(state, coll, [Correction("merge", into, other=o) for o in others])


@router.post("/v1/collections/{collection_id}/clusters/split")
def split(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """``{person_id, face_ids}``: those faces are someone else (a new unnamed person)."""
    return _correct_faces(state, collection_id, body, "split", other=-1)


@router.post("/v1/collections/{collection_id}/clusters/move")
def move(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """``{person_id, face_ids}``: those faces belong to this person."""
    return _correct_faces(state, collection_id, body, "move")


@router.post("/v1/collections/{collection_id}/clusters/reject")
def reject(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """``{person_id, face_ids}`` (or ``face_id``): not this person (every later run keeps them apart)."""
    if "face_id" in body and "face_ids" not in body:
        body = {**body, "face_ids": [body["face_id"]]}
    return _correct_faces(state, collection_id, body, "reject")
