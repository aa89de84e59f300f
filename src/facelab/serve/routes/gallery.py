"""Collections, persons and faces over :class:`facelab.gallery.Gallery`, and 1:N search.

Collections are addressed by their name (``[A-Za-z0-9._-]``, 1–64 characters), persons and
faces by their integer ids, always inside their collection (a person of another collection is
404). Enrollment runs :meth:`Gallery.enroll` under the gallery's quality policy; searches run
:meth:`Gallery.search_images`. Lists are paginated with signed cursors.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from facelab.errors import ContractMismatchError, GalleryError, GalleryNotFoundError
from facelab.gallery.enroll import REVIEW_MODES
from facelab.serve.errors import ApiError, request_id_of
from facelab.serve.routes.compute import require_multipart
from facelab.serve.schemas import face_out
from facelab.serve.state import ServiceState, decode_upload, get_state, read_upload

router = APIRouter(tags=["gallery"])

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _gallery(state: ServiceState) -> Any:
    state.require_ready()
    if not state.gallery:
        raise ApiError(503, "feature_unavailable", "no gallery is open (see the server log)")
    return state.gallery


def _collection(state: ServiceState, cid: str) -> Any:
    if not _NAME.match(cid):
        raise ApiError(404, "collection_not_found", "no such collection")
    coll = _gallery(state).store.collection_by_name(cid)
    if coll is None:
        raise ApiError(404, "collection_not_found", f"no collection {cid!r}", {"collection_id": cid})
    return coll


def _person(state: ServiceState, coll: Any, person_id: int) -> Any:
    try:
        person = state.gallery.person(person_id)
    except GalleryError:
        person = None
    if person is None or person.collection_id != coll.id:
        raise ApiError(404, "person_not_found", f"no person {person_id} in collection {coll.name!r}")
    return person


def collection_out(state: ServiceState, coll: Any) -> dict[str, Any]:
    """The JSON of a collection."""
    counts = state.gallery.store.counts(coll.id)
    return {
        "id": coll.name,
        "threshold": coll.threshold,
        "save_face_crops": coll.save_crops,
        "metadata": coll.metadata,
        "embedding_contract_id": None if coll.contract is None else coll.contract.id,
        "embedding_model": None if coll.contract is None else coll.contract.model,
        "revision": coll.revision,
        "created_at": coll.created_at,
        "counts": counts,
    }


def person_out(person: Any, coll: Any) -> dict[str, Any]:
    """The JSON of a person."""
    return {
        "id": person.id,
        "collection_id": coll.name,
        "name": person.name,
        "external_id": person.external_id,
        "kind": person.kind,
        "metadata": person.metadata,
        "face_count": person.face_count,
        "created_at": person.created_at,
        "updated_at": person.updated_at,
    }


def face_record_out(face: Any) -> dict[str, Any]:
    """The JSON of a stored face (no embedding)."""
    out = face.to_dict()
    out.pop("embedding", None)
    out.pop("source_path", None)  # server paths stay on the server
    return out


def _page(state: ServiceState, list_name: str, cursor: str | None) -> int:
    if not cursor:
        return 0
    payload = state.cursors.verify(cursor, list_name)
    if payload is None:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid for this list")
    return int(payload.get("offset", 0))


def _next(state: ServiceState, list_name: str, offset: int, limit: int, got: int) -> str | None:
    return state.cursors.sign({"list": list_name, "offset": offset + limit}) if got > limit else None


def _threshold(value: Any, message: str) -> Any:
    """``value`` when it is ``None`` or a number in ``[-1, 1]``, else 422 ``validation_error`` with ``message``."""
    if value is not None and (not isinstance(value, (int, float)) or not -1 <= value <= 1):
        raise ApiError(422, "validation_error", message)
    return value


def _gallery_errors(exc: GalleryError, missing: str = "not_found") -> ApiError:
    if isinstance(exc, GalleryNotFoundError):
        return ApiError(404, missing, str(exc)[:400])
    if isinstance(exc, ContractMismatchError):
        return ApiError(409, "collection_model_mismatch", str(exc)[:400])
    return ApiError(409, "conflict", str(exc)[:400])


# collections ---------------------------------------------------------------------------------


@router.post("/v1/collections", status_code=201)
async def create_collection(
    state: Annotated[ServiceState, Depends(get_state)],
    body: Annotated[dict[str, Any], Body(examples=[{"id": "staff", "threshold": 0.5, "save_face_crops": True}])],
) -> dict[str, Any]:
    """Create a collection: ``id`` (its name), optional ``threshold``, ``save_face_crops``, ``metadata``."""
    gallery = _gallery(state)
    cid = body.get("id")
    if not isinstance(cid, str) or not _NAME.match(cid):
        raise ApiError(422, "validation_error", "id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    unknown = set(body) - {"id", "threshold", "save_face_crops", "metadata"}
    if unknown:
        raise ApiError(422, "validation_error", f"unknown fields {sorted(unknown)}")
    threshold = _threshold(body.get("threshold"), "threshold must be a number in [-1, 1]")
    if gallery.store.collection_by_name(cid) is not None:
        raise ApiError(409, "collection_exists", f"collection {cid!r} exists")

    def work() -> Any:
        try:
            return gallery.create_collection(
                cid,
                threshold=threshold,
                save_crops=bool(body.get("save_face_crops", False)),
                metadata=body.get("metadata") or {},
            )
        except GalleryError as exc:
            raise ApiError(409, "collection_exists", str(exc)[:300]) from exc

    coll = await state.pool.run(work)
    return collection_out(state, coll)


@router.get("/v1/collections")
def list_collections(
    state: Annotated[ServiceState, Depends(get_state)],
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Collections, oldest first."""
    gallery = _gallery(state)
    offset = _page(state, "collections", cursor)
    colls = gallery.collections()[offset : offset + limit + 1]
    return {
        "collections": [collection_out(state, c) for c in colls[:limit]],
        "next_cursor": _next(state, "collections", offset, limit, len(colls)),
    }


@router.get("/v1/collections/{collection_id}")
def get_collection(collection_id: str, state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    """One collection with its counts and embedding contract."""
    return collection_out(state, _collection(state, collection_id))


@router.patch("/v1/collections/{collection_id}")
def update_collection(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Change ``threshold`` (null clears it), ``save_face_crops`` or ``metadata``."""
    coll = _collection(state, collection_id)
    unknown = set(body) - {"threshold", "save_face_crops", "metadata"}
    if unknown:
        raise ApiError(422, "validation_error", f"unknown or immutable fields {sorted(unknown)}")
    changes: dict[str, Any] = {}
    if "threshold" in body:
        changes["threshold"] = _threshold(body["threshold"], "threshold must be a number in [-1, 1] or null")
    if "save_face_crops" in body:
        changes["save_crops"] = bool(body["save_face_crops"])
    if "metadata" in body:
        if not isinstance(body["metadata"], dict):
            raise ApiError(422, "validation_error", "metadata must be an object")
        changes["metadata"] = body["metadata"]
    coll = state.gallery.store.update_collection(coll.id, **changes)
    return collection_out(state, coll)


@router.delete("/v1/collections/{collection_id}", status_code=204)
def delete_collection(
    collection_id: str, state: Annotated[ServiceState, Depends(get_state)], force: bool = False
) -> Response:
    """Delete a collection; one with persons needs ``force=true``."""
    coll = _collection(state, collection_id)
    if not force and state.gallery.store.counts(coll.id).get("persons", 0):
        raise ApiError(409, "collection_not_empty", "the collection has persons; pass force=true")
    state.gallery.delete_collection(coll.name)
    return Response(status_code=204)


# persons ---------------------------------------------------------------------------------------


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(422, "validation_error", f"metadata is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(422, "validation_error", "metadata must be a JSON object")
    return value


async def _read_images(state: ServiceState, images: list[UploadFile]) -> list[bytes]:
    limit = state.settings.max_enroll_images
    if not images:
        raise ApiError(422, "validation_error", "send 1 or more files in the form field 'images'")
    if len(images) > limit:
        raise ApiError(413, "too_many_images", f"{len(images)} images; at most {limit} per request", {"limit": limit})
    return [await read_upload(state, upload, f"images[{i}]") for i, upload in enumerate(images)]


def _enrollment_out(result: Any, uploads: list[UploadFile], coll: Any) -> dict[str, Any]:
    names = {f"<image {i}>": (u.filename or f"images[{i}]") for i, u in enumerate(uploads)}
    rejected = [
        {"image": names.get(r.source, r.source), "reasons": list(r.reasons), "detail": r.detail}
        for r in result.rejected
    ]
    return {
        "person": None if result.person is None else person_out(result.person, coll),
        "face_ids": list(result.face_ids),
        "accepted": [names.get(s, s) for s in result.accepted],
        "rejected": rejected,
    }


async def _enroll(state: ServiceState, coll: Any, uploads: list[UploadFile], review: str, **target: Any) -> Any:
    if review not in REVIEW_MODES:
        raise ApiError(422, "validation_error", f"review_mode must be one of {REVIEW_MODES}")
    data = await _read_images(state, uploads)
    gallery = state.gallery

    def work() -> Any:
        with state.metrics.time_stage("enroll"):
            try:
                return gallery.enroll(
                    data,
                    state.analyzer,
                    collection=coll.name,
                    review=review,
                    max_pixels=state.settings.max_pixels,
                    is_live=state.liveness_check,
                    **target,
                )
            except GalleryError as exc:
                raise _gallery_errors(exc, "person_not_found") from exc

    result = await state.pool.run(work)
    body = _enrollment_out(result, uploads, coll)
    if not result.face_ids:
        raise ApiError(422, "registration_failed", "no image was accepted", {"rejected": body["rejected"]})
    state.metrics.faces.labels("enroll").inc(len(result.face_ids))
    return body


@router.post("/v1/collections/{collection_id}/persons", status_code=201, dependencies=[Depends(require_multipart)])
async def create_person(
    request: Request,
    collection_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    images: Annotated[list[UploadFile], File(description="1 to 20 photos of the person")],
    name: Annotated[str, Form(min_length=1, max_length=200)],
    external_id: Annotated[str | None, Form(max_length=200)] = None,
    metadata: Annotated[str | None, Form(description="a JSON object")] = None,
    review_mode: Annotated[str, Form(description="off | standard | strict")] = "standard",
) -> dict[str, Any]:
    """Create a person and enroll their photos; 201 with what was accepted and rejected (and why)."""
    coll = _collection(state, collection_id)
    if external_id and state.gallery.store.persons(coll.id, external_id=external_id):
        raise ApiError(409, "conflict", f"external_id {external_id!r} is taken in this collection")
    body = await _enroll(
        state, coll, images, review_mode, name=name, external_id=external_id or None, metadata=_metadata(metadata)
    )
    body["request_id"] = request_id_of(request)
    return body


@router.get("/v1/collections/{collection_id}/persons")
def list_persons(
    collection_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    kind: Annotated[str | None, Query(description="named | cluster")] = None,
) -> dict[str, Any]:
    """Persons of a collection (``search`` over name and external id)."""
    coll = _collection(state, collection_id)
    if kind not in (None, "named", "cluster"):
        raise ApiError(422, "validation_error", "kind must be named or cluster")
    list_name = f"persons:{coll.id}:{search or ''}:{kind or ''}"
    offset = _page(state, list_name, cursor)
    people = state.gallery.store.persons(coll.id, search=search or None, kind=kind, limit=limit + 1, offset=offset)
    return {
        "persons": [person_out(p, coll) for p in people[:limit]],
        "next_cursor": _next(state, list_name, offset, limit, len(people)),
    }


@router.get("/v1/collections/{collection_id}/persons/{person_id}")
def get_person(collection_id: str, person_id: int, state: Annotated[ServiceState, Depends(get_state)]) -> Any:
    """One person."""
    coll = _collection(state, collection_id)
    return person_out(_person(state, coll, person_id), coll)


@router.patch("/v1/collections/{collection_id}/persons/{person_id}")
def update_person(
    collection_id: str,
    person_id: int,
    state: Annotated[ServiceState, Depends(get_state)],
    body: Annotated[dict[str, Any], Body()],
) -> Any:
    """Change ``name``, ``external_id`` or ``metadata``."""
    coll = _collection(state, collection_id)
    _person(state, coll, person_id)
    unknown = set(body) - {"name", "external_id", "metadata"}
    if unknown:
        raise ApiError(422, "validation_error", f"unknown fields {sorted(unknown)}")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise ApiError(422, "validation_error", "metadata must be an object")
    for key in ("name", "external_id"):
        if key in body and body[key] is not None and (not isinstance(body[key], str) or len(body[key]) > 200):
            raise ApiError(422, "validation_error", f"{key} must be a string of at most 200 characters")
    try:
        person = state.gallery.update_person(person_id, **body)
    except GalleryError as exc:
        raise _gallery_errors(exc) from exc
    return person_out(person, coll)


@router.delete("/v1/collections/{collection_id}/persons/{person_id}", status_code=204)
def delete_person(collection_id: str, person_id: int, state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    """Delete a person with every face, embedding, crop and index entry."""
    coll = _collection(state, collection_id)
    _person(state, coll, person_id)
    try:
        state.gallery.delete_person(person_id)
    except GalleryError as exc:
        raise ApiError(404, "person_not_found", str(exc)[:300]) from exc
    return Response(status_code=204)


@router.post("/v1/collections/{collection_id}/persons/{person_id}/merge")
def merge_persons(
    collection_id: str,
    person_id: int,
    state: Annotated[ServiceState, Depends(get_state)],
    body: Annotated[dict[str, Any], Body(examples=[{"others": [12, 15]}])],
) -> Any:
    """Move every face of ``others`` to this person and delete them."""
    coll = _collection(state, collection_id)
    _person(state, coll, person_id)
    others = body.get("others")
    if not isinstance(others, list) or not others or not all(isinstance(o, int) for o in others):
        raise ApiError(422, "validation_error", "others must be a non-empty list of person ids")
    for other in others:
        _person(state, coll, other)
    if person_id in others:
        raise ApiError(422, "validation_error", "a person cannot be merged into itself")
    moved = state.gallery.merge_persons(person_id, others)
    return {"person": person_out(state.gallery.person(person_id), coll), "moved_faces": moved}


# faces -----------------------------------------------------------------------------------------


@router.post(
    "/v1/collections/{collection_id}/persons/{person_id}/faces",
    status_code=201,
    dependencies=[Depends(require_multipart)],
)
async def add_faces(
    request: Request,
    collection_id: str,
    person_id: int,
    state: Annotated[ServiceState, Depends(get_state)],
    images: Annotated[list[UploadFile], File()],
    review_mode: Annotated[str, Form()] = "standard",
) -> dict[str, Any]:
    """Add photos to a person (the same rules as enrollment)."""
    coll = _collection(state, collection_id)
    _person(state, coll, person_id)
    body = await _enroll(state, coll, images, review_mode, person=person_id)
    body["request_id"] = request_id_of(request)
    return body


@router.get("/v1/collections/{collection_id}/persons/{person_id}/faces")
def list_faces(collection_id: str, person_id: int, state: Annotated[ServiceState, Depends(get_state)]) -> Any:
    """The person's faces (box, keypoints, scores, quality, ``has_crop``)."""
    coll = _collection(state, collection_id)
    _person(state, coll, person_id)
    return {"faces": [face_record_out(f) for f in state.gallery.faces(person_id)]}


def _face(state: ServiceState, coll: Any, person_id: int, face_id: int) -> Any:
    _person(state, coll, person_id)
    found = state.gallery.store.faces(face_ids=[face_id])
    if not found or found[0].person_id != person_id:
        raise ApiError(404, "face_not_found_id", f"no face {face_id} of person {person_id}")
    return found[0]


@router.get(
    "/v1/collections/{collection_id}/persons/{person_id}/faces/{face_id}/image",
    responses={200: {"content": {"image/jpeg": {}}}},
)
def face_image(collection_id: str, person_id: int, face_id: int, state: Annotated[ServiceState, Depends(get_state)]):
    """The stored 112×112 crop of a face (JPEG; the collection must save crops)."""
    coll = _collection(state, collection_id)
    _face(state, coll, person_id, face_id)
    crop = state.gallery.face_crop(face_id)
    if crop is None:
        raise ApiError(404, "not_found", "no crop is stored for this face")
    return Response(crop, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.delete("/v1/collections/{collection_id}/persons/{person_id}/faces/{face_id}", status_code=204)
def delete_face(
    collection_id: str, person_id: int, face_id: int, state: Annotated[ServiceState, Depends(get_state)]
) -> Response:
    """Delete one face with its embedding, crop and index entry."""
    coll = _collection(state, collection_id)
    _face(state, coll, person_id, face_id)
    state.gallery.delete_faces([face_id])
    return Response(status_code=204)


# search ----------------------------------------------------------------------------------------


@router.post("/v1/collections/{collection_id}/search", dependencies=[Depends(require_multipart)])
async def search(
    request: Request,
    collection_id: str,
    state: Annotated[ServiceState, Depends(get_state)],
    image: Annotated[UploadFile, File()],
    limit: Annotated[int, Form(ge=1, le=100)] = 5,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
) -> dict[str, Any]:
    """1:N: every face of the photo against the collection; a person's score is the max over its faces."""
    coll = _collection(state, collection_id)
    data = await read_upload(state, image, "image")

    def work() -> tuple:
        arr = decode_upload(state, data, "image")
        with state.metrics.time_stage("search"):
            try:
                found = state.gallery.search_image(
                    arr,
                    state.analyzer,
                    k=limit,
                    collection=coll.name,
                    threshold=threshold,
                    is_live=state.liveness_check,
                )
            except GalleryError as exc:
                raise _gallery_errors(exc) from exc
        return arr.shape, found

    shape, found = await state.pool.run(work)
    h, w = shape[:2]
    results = []
    for hit in found:
        best = hit.best
        results.append(
            {
                "face": face_out(hit.face, w, h),
                "identity": None if best is None else best.to_dict(),
                "matches": [m.to_dict() for m in hit.matches],
                "rejected": hit.rejected,
            }
        )
    return {
        "collection_id": coll.name,
        "threshold": found[0].threshold if found else state.gallery.threshold_for(coll, threshold, state.analyzer),
        "faces": results,
        "image": {"width": w, "height": h},
        "request_id": request_id_of(request),
    }
