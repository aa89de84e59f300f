"""Typed results: :class:`Detections` from a detector and :class:`Face` from the pipeline.

Conventions used everywhere in facelab:

* Images are ``(H, W, 3)`` ``uint8`` arrays in **BGR** order (OpenCV's), unless a docstring says
  otherwise.
* Coordinates are pixels of the original image, ``x`` to the right and ``y`` down, with the
  origin at the top-left corner of the top-left pixel's *centre* as InsightFace and OpenCV use.
* Boxes are ``[x1, y1, x2, y2]`` ``float32``.
* Five-point keypoints are ordered as :class:`FaceKeypoint`: the subject's right eye first as it
  appears on the **left** of an un-mirrored photo (InsightFace calls it "left eye").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = ["FaceKeypoint", "Detections", "Face", "fill_faces"]


class FaceKeypoint(enum.IntEnum):
    """Index of each of the five keypoints in a ``(5, 2)`` array.

    "Left" and "right" are as seen in the image (image left = small ``x``), which is the
    subject's right side on an un-mirrored photo. This is the order of InsightFace's ArcFace
    template and of SCRFD/RetinaFace outputs.
    """

    LEFT_EYE = 0
    RIGHT_EYE = 1
    NOSE = 2
    LEFT_MOUTH = 3
    RIGHT_MOUTH = 4


@dataclass
class Detections:
    """Faces found in one image.

    Attributes:
        boxes: ``(N, 4)`` ``float32`` ``[x1, y1, x2, y2]`` in image pixels.
        scores: ``(N,)`` ``float32`` detector confidences.
        kps: ``(N, 5, 2)`` ``float32`` five keypoints (:class:`FaceKeypoint` order), or ``None``
            for a detector without keypoints.
    """

    boxes: np.ndarray
    scores: np.ndarray
    kps: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if self.kps is not None:
            self.kps = np.asarray(self.kps, dtype=np.float32).reshape(-1, 5, 2)
        if len(self.scores) != len(self.boxes) or (self.kps is not None and len(self.kps) != len(self.boxes)):
            raise ConfigError(
                f"Detections: boxes, scores and kps must have the same length, got {len(self.boxes)}, "
                f"{len(self.scores)} and {'none' if self.kps is None else len(self.kps)}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_kps: bool = True) -> Detections:
        """Return a result with no face."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32) if with_kps else None,
        )

    def select(self, index: np.ndarray | list[int] | slice) -> Detections:
        """Return the subset at ``index`` (any numpy index)."""
        return Detections(self.boxes[index], self.scores[index], None if self.kps is None else self.kps[index])

    @property
    def det(self) -> np.ndarray:
        """``(N, 5)`` ``float32`` ``[x1, y1, x2, y2, score]``: InsightFace's ``det`` layout."""
        return np.concatenate([self.boxes, self.scores[:, None]], axis=1).astype(np.float32)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return _to_jsonable(value.to_dict())
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


@dataclass
class Face:
    """One analysed face.

    Fields a module did not compute stay ``None``.

    Attributes:
        bbox: ``(4,)`` ``float32`` ``[x1, y1, x2, y2]`` in image pixels.
        score: detector confidence in ``[0, 1]``.
        kps: ``(5, 2)`` ``float32`` keypoints, :class:`FaceKeypoint` order.
        landmark_2d_106: ``(106, 2)`` ``float32`` image pixels.
        landmark_3d_68: ``(68, 3)`` ``float32``; ``x, y`` image pixels, ``z`` in the same scale.
        pose: ``(3,)`` ``float32`` ``[pitch, yaw, roll]`` in degrees.
        gender: 1 = male, 0 = female (InsightFace's convention).
        age: years.
        embedding: ``(D,)`` ``float32`` raw recogniser output (not normalised).
        quality: :class:`~facelab.attributes.quality.FaceQuality` (detector score, sharpness,
            brightness, size and pose from the five points), filled for every face by the pipeline.
        liveness: :class:`~facelab.liveness.LivenessResult` (``score``, ``is_live``, per-model
            scores), filled when the analyser has the ``liveness`` module.
        attributes: outputs of other attribute models, by task name.
        model: name of the pack or recogniser that produced the embedding (for comparing like with like).
    """

    bbox: np.ndarray
    score: float
    kps: np.ndarray | None = None
    landmark_2d_106: np.ndarray | None = None
    landmark_3d_68: np.ndarray | None = None
    pose: np.ndarray | None = None
    gender: int | None = None
    age: int | None = None
    embedding: np.ndarray | None = None
    quality: Any | None = None
    liveness: Any | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    @property
    def det_score(self) -> float:
        """Alias of :attr:`score` (InsightFace's name)."""
        return self.score

    @property
    def sex(self) -> str | None:
        """``"M"`` or ``"F"`` from :attr:`gender`, InsightFace's convention."""
        if self.gender is None:
            return None
        return "M" if self.gender == 1 else "F"

    @property
    def embedding_norm(self) -> float | None:
        """L2 norm of the raw embedding."""
        return None if self.embedding is None else float(np.linalg.norm(self.embedding))

    @property
    def normed_embedding(self) -> np.ndarray | None:
        """``(D,)`` ``float32`` unit-length embedding; the dot product of two is their cosine similarity."""
        if self.embedding is None:
            return None
        norm = np.linalg.norm(self.embedding)
        return (self.embedding / max(norm, 1e-12)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (arrays become nested lists; unset fields are omitted)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "attributes" and not value):
                continue
            out[f.name] = _to_jsonable(value)
        if self.gender is not None:
            out["sex"] = self.sex
        return out


def fill_faces(faces: Sequence[Sequence[Face]], values: Sequence[Mapping[str, Sequence[Any]]]) -> None:
    """Store per-face model outputs on the faces, in place.

    Args:
        faces: one list of :class:`Face` per image.
        values: one ``{name: [value per face]}`` dict per image, as the runners'
            ``predict_detections`` return. A name that is a :class:`Face` field (``pose``,
            ``landmark_2d_106``, ``gender``, ...) sets that field; any other name goes to
            ``face.attributes[name]``.
    """
    settable = {f.name for f in fields(Face)} - {"attributes"}
    for per_image, columns in zip(faces, values):
        for name, column in columns.items():
            for face, value in zip(per_image, column):
                if name in settable:
                    setattr(face, name, value)
                else:
                    face.attributes[name] = value
