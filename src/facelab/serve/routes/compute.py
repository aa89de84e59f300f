"""Stateless face routes: detect, analyze, compare, embeddings, liveness, swap.

Each route checks its uploads (:func:`facelab.serve.state.read_upload`), then runs the library on
a worker of the shared pool: :meth:`FaceAnalyzer.detect_faces`, :meth:`FaceAnalyzer.analyze`,
:func:`facelab.recognition.compare`, :class:`facelab.swap.FaceSwapper`. No face logic lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from facelab.ops.boxes import box_area
from facelab.recognition.compare import compare as cosine
from facelab.serve.errors import ApiError, request_id_of
from facelab.serve.schemas import AnalyzeResponse, CompareResponse, DetectResponse, EmbeddingResponse, face_out
from facelab.serve.state import ServiceState, decode_upload, get_state, read_upload

router = APIRouter(tags=["faces"])

#: Single-face selection: the Server's ``largest`` and ``center_largest`` → the pipeline's metrics.
SELECTION = {"largest": "max", "center_largest": "default"}


def require_multipart(request: Request) -> None:
    """415 unless the request is ``multipart/form-data``."""
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send images as multipart/form-data", {"content_type": kind[:100]}
        )


def _selection(value: str) -> str:
    if value not in SELECTION:
        raise ApiError(422, "validation_error", f"selection must be one of {sorted(SELECTION)}, not {value!r}")
    return SELECTION[value]


def _by_area(faces: list) -> list:
    """``faces`` largest box first (ties keep their order)."""
    if not faces:
        return []
    order = np.argsort(-box_area(np.stack([f.bbox for f in faces])), kind="stable")
    return [faces[i] for i in order]


async def _faces_in_upload(
    state: ServiceState, upload: UploadFile, stage: str, find: Callable[[np.ndarray], list]
) -> tuple[int, int, list]:
    """Check and decode the ``image`` upload, run ``find`` on it on a worker (timed as ``stage``).

    Returns:
        ``(width, height, faces)``, the faces largest first.
    """
    data = await read_upload(state, upload, "image")

    def work() -> tuple[tuple[int, ...], list]:
        arr = decode_upload(state, data, "image")
        with state.metrics.time_stage(stage):
            return arr.shape, find(arr)

    shape, faces = await state.pool.run(work)
    return shape[1], shape[0], _by_area(faces)


@router.post("/v1/detect", response_model=DetectResponse, dependencies=[Depends(require_multipart)])
async def detect(
    request: Request,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP or TIFF")],
    state: Annotated[ServiceState, Depends(get_state)],
    max_faces: Annotated[int, Form(ge=1, le=100)] = 100,
) -> Any:
    """Find faces: boxes (pixels and normalised), five landmarks, score and quality, largest first."""
    state.require_ready()
    w, h, faces = await _faces_in_upload(state, image, "detect", state.analyzer.detect_faces)
    faces = faces[: min(max_faces, state.settings.max_faces)]
    state.metrics.faces.labels("detect").inc(len(faces))
    return {
        "faces": [face_out(f, w, h) for f in faces],
        "image": {"width": w, "height": h},
        "request_id": request_id_of(request),
    }


@router.post("/v1/analyze", response_model=AnalyzeResponse, dependencies=[Depends(require_multipart)])
async def analyze(
    request: Request,
    image: Annotated[UploadFile, File()],
    state: Annotated[ServiceState, Depends(get_state)],
    max_faces: Annotated[int, Form(ge=1, le=100)] = 100,
    embeddings: Annotated[bool, Form(description="include each face's L2-normalised embedding")] = False,
) -> Any:
    """Every model of the pack on every face (landmarks, attributes, embeddings)."""
    state.require_ready()
    w, h, faces = await _faces_in_upload(state, image, "analyze", state.analyzer.analyze)
    faces = faces[:max_faces]
    state.metrics.faces.labels("analyze").inc(len(faces))
    rec = state.analyzer.cards.get("recognition")
    return {
        "faces": [face_out(f, w, h, embedding=embeddings) for f in faces],
        "image": {"width": w, "height": h},
        "model": None if rec is None else rec.name,
        "request_id": request_id_of(request),
    }


def one_face(state: ServiceState, data: bytes, field: str, metric: str) -> tuple[Any, np.ndarray]:
    """Decode an upload and analyse its selected face (on a worker); 422 ``face_not_found`` when none."""
    arr = decode_upload(state, data, field)
    with state.metrics.time_stage("analyze"):
        faces = state.analyzer.analyze(arr, max_num=1, metric=metric)
    if not faces:
        raise ApiError(422, "face_not_found", f"{field}: no face found", {"field": field})
    if faces[0].embedding is None:
        raise ApiError(503, "feature_unavailable", "the loaded pack has no recogniser")
    return faces[0], arr


@router.post("/v1/compare", response_model=CompareResponse, dependencies=[Depends(require_multipart)])
async def compare(
    request: Request,
    source: Annotated[UploadFile, File()],
    target: Annotated[UploadFile, File()],
    state: Annotated[ServiceState, Depends(get_state)],
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0, description="default: the pack's threshold")] = None,
    selection: Annotated[str, Form(description="largest | center_largest")] = "largest",
) -> Any:
    """1:1: the selected face of each image, their cosine similarity and the match decision (``>=``)."""
    state.require_ready()
    metric = _selection(selection)
    src = await read_upload(state, source, "source")
    tgt = await read_upload(state, target, "target")

    def work() -> tuple:
        a, a_img = one_face(state, src, "source", metric)
        b, b_img = one_face(state, tgt, "target", metric)
        return a, a_img.shape, b, b_img.shape

    a, a_shape, b, b_shape = await state.pool.run(work)
    similarity = float(cosine(a, b))
    limit = state.analyzer.threshold if threshold is None else float(threshold)
    return {
        "similarity": similarity,
        "threshold": limit,
        "matched": None if limit is None else similarity >= limit,
        "source_face": face_out(a, a_shape[1], a_shape[0]),
        "target_face": face_out(b, b_shape[1], b_shape[0]),
        "request_id": request_id_of(request),
    }


@router.post("/v1/embeddings", response_model=EmbeddingResponse, dependencies=[Depends(require_multipart)])
async def embeddings(
    request: Request,
    image: Annotated[UploadFile, File()],
    state: Annotated[ServiceState, Depends(get_state)],
    selection: Annotated[str, Form()] = "largest",
) -> Any:
    """The L2-normalised embedding of the selected face, with the model that made it."""
    state.require_ready()
    metric = _selection(selection)
    data = await read_upload(state, image, "image")
    face, arr = await state.pool.run(one_face, state, data, "image", metric)
    vec = face.normed_embedding
    return {
        "embedding": vec.astype(float).tolist(),
        "dimension": int(vec.shape[0]),
        "model": face.model,
        "face": face_out(face, arr.shape[1], arr.shape[0]),
        "request_id": request_id_of(request),
    }


@router.post("/v1/liveness", dependencies=[Depends(require_multipart)])
async def liveness(
    request: Request,
    image: Annotated[UploadFile, File()],
    state: Annotated[ServiceState, Depends(get_state)],
) -> dict[str, Any]:
    """Is each face live? MiniFASNet V2 + V1SE (Silent-Face-Anti-Spoofing) on every detected face."""
    state.require_ready()
    runner = state.analyzer.liveness
    if runner is None:
        raise ApiError(503, "feature_unavailable", "liveness is off: start the service with --liveness")
    data = await read_upload(state, image, "image")

    def work() -> tuple:
        arr = decode_upload(state, data, "image")
        with state.metrics.time_stage("liveness"):
            faces = _by_area(state.analyzer.detect_faces(arr))
            results = runner.check(arr, [f.bbox for f in faces]) if faces else []
        return arr.shape, faces, results

    shape, faces, results = await state.pool.run(work)
    h, w = shape[:2]
    out = []
    for face, result in zip(faces, results):
        item = face_out(face, w, h)
        item["liveness"] = result.to_dict()
        out.append(item)
    return {"faces": out, "image": {"width": w, "height": h}, "request_id": request_id_of(request)}


def _swapper(state: ServiceState) -> Any:
    if state.settings.swap_model is None:
        raise ApiError(503, "feature_unavailable", "face swap is off: start the service with --swap-model PATH")
    with state.lock:
        if state.swapper is None:
            from facelab.swap import FaceSwapper, default_swapper_card

            path = state.settings.swap_model
            state.swapper = FaceSwapper.from_card(default_swapper_card(path), path, state.analyzer.runtime)
    return state.swapper


@router.post(
    "/v1/swap",
    dependencies=[Depends(require_multipart)],
    responses={200: {"content": {"image/jpeg": {}}, "description": "the target image with swapped faces"}},
)
async def swap(
    target: Annotated[UploadFile, File(description="the photo whose faces are replaced")],
    source: Annotated[UploadFile, File(description="a photo of the identity to put in")],
    state: Annotated[ServiceState, Depends(get_state)],
    all_faces: Annotated[bool, Form(description="swap every face of the target (else the largest)")] = True,
) -> Response:
    """Put the source identity onto the target's faces with the user-supplied inswapper model (JPEG)."""
    state.require_ready()
    swapper = _swapper(state)
    tgt = await read_upload(state, target, "target")
    src = await read_upload(state, source, "source")

    def work() -> bytes:
        identity, _ = one_face(state, src, "source", "max")
        img = decode_upload(state, tgt, "target")
        faces = state.analyzer.detect_faces(img) if all_faces else state.analyzer.detect_faces(img, 1, "max")
        if not faces:
            raise ApiError(422, "face_not_found", "target: no face found", {"field": "target"})
        out = img
        with state.metrics.time_stage("swap"):
            for face in faces:
                out = swapper.swap(out, face.kps, identity)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
            raise ApiError(500, "internal_error", "could not encode the result")
        return buf.tobytes()

    return Response(await state.pool.run(work), media_type="image/jpeg", headers={"Cache-Control": "no-store"})
