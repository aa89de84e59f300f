"""Response models of the API (they make ``/openapi.json``) and the one ``Face`` → JSON conversion.

Coordinates are image pixels, ``x`` right and ``y`` down, of the image as uploaded after its EXIF
orientation is applied; ``box_normalized`` divides by the image's width and height. Landmarks are
the five keypoints in facelab's order (left eye, right eye, nose, left and right mouth corner as
seen in the image). Similarities are raw cosines in ``[-1, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from facelab.structures import Face

__all__ = [
    "Box",
    "FaceOut",
    "ImageInfo",
    "DetectResponse",
    "AnalyzeResponse",
    "CompareResponse",
    "EmbeddingResponse",
    "HealthResponse",
    "face_out",
]


class Box(BaseModel):
    """A face box ``[x1, y1, x2, y2]``."""

    x1: float
    y1: float
    x2: float
    y2: float


class Quality(BaseModel):
    """:class:`facelab.attributes.quality.FaceQuality` fields."""

    score: float
    det: float
    sharpness: float
    brightness: float
    size: float
    face_size: float
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    pose: float


class FaceOut(BaseModel):
    """One face."""

    box: Box
    box_normalized: Box
    score: float = Field(description="detector confidence")
    landmarks: list[list[float]] | None = Field(None, description="five (x, y) keypoints, or null")
    quality: Quality | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="per-face model outputs (analyze only)")
    embedding: list[float] | None = Field(None, description="L2-normalised embedding (when asked)")


class ImageInfo(BaseModel):
    """The decoded image."""

    width: int
    height: int


class DetectResponse(BaseModel):
    """``POST /v1/detect``."""

    faces: list[FaceOut]
    image: ImageInfo
    request_id: str


class AnalyzeResponse(DetectResponse):
    """``POST /v1/analyze``: every model of the pack."""

    model: str | None = None


class CompareResponse(BaseModel):
    """``POST /v1/compare``."""

    similarity: float
    threshold: float | None
    matched: bool | None
    source_face: FaceOut
    target_face: FaceOut
    request_id: str


class EmbeddingResponse(BaseModel):
    """``POST /v1/embeddings``."""

    embedding: list[float]
    dimension: int
    model: str | None
    face: FaceOut
    request_id: str


class HealthResponse(BaseModel):
    """``GET /v1/health``."""

    status: str
    auth_enabled: bool
    version: str


def _box(b: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> dict[str, float]:
    x1, y1, x2, y2 = (float(v) for v in b)
    return {"x1": x1 / sx, "y1": y1 / sy, "x2": x2 / sx, "y2": y2 / sy}


_ATTRIBUTE_FIELDS = ("gender", "age", "pose", "landmark_2d_106", "landmark_3d_68")


def face_out(face: Face, width: int, height: int, embedding: bool = False) -> dict[str, Any]:
    """The JSON of one library :class:`~facelab.structures.Face`."""
    attributes: dict[str, Any] = {}
    for name in _ATTRIBUTE_FIELDS:
        value = getattr(face, name)
        if value is not None:
            attributes[name] = np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
    if face.gender is not None:
        attributes["sex"] = face.sex
    liveness = getattr(face, "liveness", None)
    if liveness is not None:
        attributes["liveness"] = liveness.to_dict() if hasattr(liveness, "to_dict") else liveness
    for name, value in face.attributes.items():
        if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
            attributes[name] = value
        elif isinstance(value, np.ndarray) and value.size <= 1024:
            attributes[name] = value.tolist()
    out: dict[str, Any] = {
        "box": _box(face.bbox),
        "box_normalized": _box(face.bbox, float(width), float(height)),
        "score": float(face.score),
        "landmarks": None if face.kps is None else np.asarray(face.kps, dtype=float).tolist(),
        "quality": None if face.quality is None else face.quality.to_dict(),
        "attributes": attributes,
    }
    if embedding and face.normed_embedding is not None:
        out["embedding"] = face.normed_embedding.astype(float).tolist()
    return out
