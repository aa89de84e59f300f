"""Face quality: one score per face from the detector score, sharpness, brightness, size and pose.

The score follows InsightFace Server 0.2's formula (``inference/quality.py``)::

    quality = 0.35 * det + 0.25 * sharpness + 0.15 * brightness_score + 0.15 * size + 0.10 * pose

with

* ``det``: the detector score clipped to ``[0, 1]``;
* ``sharpness = 1 - exp(-var(Laplacian(gray)) / 100)`` of the box crop resized to 112x112 (a
  fixed size, so the value does not depend on the face's pixel size);
* ``brightness``: mean grey level of that crop divided by 255; ``brightness_score =
  1 - 2 * |brightness - 0.5|`` (1 at mid grey, 0 at black or white);
* ``size = min(min(w, h) / 80, 1)`` with ``w, h`` the box sides in pixels;
* ``pose = 1 - max(|yaw|, |pitch|, |roll|) / 90`` clipped to ``[0, 1]``, from the five keypoints
  (:func:`pose_from_kps`); 0.5 when the detector gives no keypoints.

The Server's text gives the weights, the sharpness, size and angle formulas; the brightness and
pose scores and the 112x112 crop are facelab's choices where it is silent.

:class:`QualityPolicy` holds the enrollment rules (the Server's ``standard`` review defaults: face
side ≥ 40 px, detector score ≥ 0.6, every angle within ±45°, quality ≥ 0.35) and returns the
Server's rejection reason codes. The gallery, the CLI and the service all use this one policy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "FaceQuality",
    "QualityPolicy",
    "QUALITY_WEIGHTS",
    "QUALITY_CROP_SIZE",
    "pose_from_kps",
    "face_quality",
]

#: Weights of the quality terms (InsightFace Server 0.2).
QUALITY_WEIGHTS = {"det": 0.35, "sharpness": 0.25, "brightness": 0.15, "size": 0.15, "pose": 0.10}

#: Side of the square box crop on which sharpness and brightness are measured.
QUALITY_CROP_SIZE = 112

#: Face side (pixels) at which the size term reaches 1.
_FULL_SIZE_PX = 80.0


@dataclass(frozen=True)
class FaceQuality:
    """Quality of one face.

    Attributes:
        score: weighted quality in ``[0, 1]`` (see the module docstring).
        det: detector score clipped to ``[0, 1]``.
        sharpness: ``1 - exp(-laplacian_var / 100)`` in ``[0, 1)``.
        brightness: mean grey level / 255 of the face crop, in ``[0, 1]``.
        size: box side term ``min(min(w, h) / 80, 1)``.
        face_size: ``min(w, h)`` of the box in pixels.
        yaw: degrees, positive when the nose is right of the eyes' midpoint in the image; ``None``
            without keypoints.
        pitch: degrees, positive when the nose is low (face turned down); ``None`` without keypoints.
        roll: degrees of the eye line from horizontal, positive clockwise in the image (``y`` down);
            ``None`` without keypoints.
        pose: pose term in ``[0, 1]``.
    """

    score: float
    det: float
    sharpness: float
    brightness: float
    size: float
    face_size: float
    yaw: float | None
    pitch: float | None
    roll: float | None
    pose: float

    def to_dict(self) -> dict[str, float | None]:
        """Plain dict of every field (JSON-safe)."""
        return asdict(self)


def pose_from_kps(kps: np.ndarray) -> tuple[float, float, float]:
    """Rough ``(yaw, pitch, roll)`` in degrees from five keypoints (InsightFace Server's formulas).

    ``roll`` is the angle of the line from the left to the right eye (image order); ``yaw =
    (nose_x - eye_mid_x) / eye_dist * 90``; ``pitch = ((nose_y - eye_mid_y) / (mouth_mid_y -
    eye_mid_y) - 0.45) * 90``, where ``x``/``y`` are measured in the face's frame (the eye line
    rotated to horizontal), so that an in-plane rotation changes only ``roll``.

    Args:
        kps: ``(5, 2)`` keypoints in :class:`~facelab.structures.FaceKeypoint` order, pixels.

    Returns:
        ``(yaw, pitch, roll)`` in degrees.

    Raises:
        ConfigError: ``kps`` is not ``(5, 2)`` or not finite.

    Example:
        >>> from facelab.alignment.templates import arcface_points
        >>> yaw, pitch, roll = pose_from_kps(arcface_points(112))
        >>> round(yaw, 1), round(pitch, 1), round(roll, 1)
        (0.0, 4.0, -0.3)
    """
    pts = np.asarray(kps, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ConfigError(f"pose_from_kps: expected finite (5, 2) keypoints, got shape {pts.shape}")
    left_eye, right_eye = pts[0], pts[1]
    eye_vec = right_eye - left_eye
    eye_dist = float(np.hypot(*eye_vec))
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    if eye_dist < 1e-6:
        return 90.0, 90.0, roll
    # Rotate into the face's frame: x along the eye line, y perpendicular (down the face).
    cos, sin = eye_vec / eye_dist
    rot = np.array([[cos, sin], [-sin, cos]])
    eye_mid = (left_eye + right_eye) / 2
    local = (pts - eye_mid) @ rot.T
    nose_l = local[2]
    mouth_mid = (local[3] + local[4]) / 2
    yaw = nose_l[0] / eye_dist * 90.0
    denom = mouth_mid[1]
    pitch = 90.0 if abs(denom) < 1e-6 else (nose_l[1] / denom - 0.45) * 90.0
    return float(yaw), float(pitch), float(roll)


def _crop_gray(image: np.ndarray, bbox: np.ndarray) -> np.ndarray | None:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in bbox)
    ix1, iy1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    ix2, iy2 = min(w, int(math.ceil(x2))), min(h, int(math.ceil(y2)))
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return None
    crop = image[iy1:iy2, ix1:ix2]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    interp = cv2.INTER_AREA if min(gray.shape) > QUALITY_CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(gray, (QUALITY_CROP_SIZE, QUALITY_CROP_SIZE), interpolation=interp)


def face_quality(image: np.ndarray, bbox: np.ndarray, kps: np.ndarray | None, det_score: float) -> FaceQuality:
    """Quality of one face (see the module docstring for the formula).

    Args:
        image: ``(H, W, 3)`` ``uint8`` BGR image the face was found in.
        bbox: ``(4,)`` ``[x1, y1, x2, y2]`` pixels.
        kps: ``(5, 2)`` keypoints (:class:`~facelab.structures.FaceKeypoint` order) or ``None``.
        det_score: detector confidence.

    Returns:
        The :class:`FaceQuality`; a box entirely outside the image gets sharpness and brightness 0.

    Example:
        >>> img = np.full((200, 200, 3), 128, np.uint8)
        >>> q = face_quality(img, np.array([50, 50, 150, 150]), None, 0.9)
        >>> round(q.brightness, 2), q.sharpness, q.size, q.pose
        (0.5, 0.0, 1.0, 0.5)
    """
    box = np.asarray(bbox, dtype=np.float64).reshape(4)
    face_size = float(max(0.0, min(box[2] - box[0], box[3] - box[1])))
    gray = _crop_gray(image, box)
    if gray is None:
        sharpness = brightness = 0.0
    else:
        lap_var = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        sharpness = 1.0 - math.exp(-lap_var / 100.0)
        brightness = float(gray.mean()) / 255.0
    bright_score = max(0.0, 1.0 - 2.0 * abs(brightness - 0.5)) if gray is not None else 0.0
    size = min(face_size / _FULL_SIZE_PX, 1.0)
    det = min(max(float(det_score), 0.0), 1.0)
    if kps is None or not np.all(np.isfinite(np.asarray(kps, dtype=np.float64))):
        yaw = pitch = roll = None
        pose = 0.5
    else:
        yaw, pitch, roll = pose_from_kps(kps)
        pose = min(max(1.0 - max(abs(yaw), abs(pitch), abs(roll)) / 90.0, 0.0), 1.0)
    wt = QUALITY_WEIGHTS
    score = (
        wt["det"] * det
        + wt["sharpness"] * sharpness
        + wt["brightness"] * bright_score
        + wt["size"] * size
        + wt["pose"] * pose
    )
    return FaceQuality(
        score=float(score),
        det=det,
        sharpness=float(sharpness),
        brightness=float(brightness),
        size=float(size),
        face_size=face_size,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        pose=float(pose),
    )


@dataclass(frozen=True)
class QualityPolicy:
    """Rules a face must meet to be enrolled (InsightFace Server's ``standard`` review defaults).

    Attributes:
        min_face: smallest accepted ``min(w, h)`` of the box, pixels.
        min_det_score: smallest accepted detector score.
        max_angle: largest accepted ``|yaw|``, ``|pitch|`` and ``|roll|``, degrees (not checked when
            the detector gives no keypoints).
        min_quality: smallest accepted :attr:`FaceQuality.score`.
    """

    min_face: float = 40.0
    min_det_score: float = 0.6
    max_angle: float = 45.0
    min_quality: float = 0.35

    def __post_init__(self) -> None:
        for name in ("min_face", "min_det_score", "max_angle", "min_quality"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"QualityPolicy.{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def off(cls) -> QualityPolicy:
        """A policy that accepts every detected face (the Server's ``off`` review mode)."""
        return cls(min_face=0.0, min_det_score=0.0, max_angle=180.0, min_quality=0.0)

    def reasons(self, quality: FaceQuality, det_score: float) -> list[str]:
        """Rejection reasons for one face, empty when it is accepted.

        Codes (the Server's): ``face_too_small``, ``low_detection_score``, ``extreme_pose``,
        ``low_quality``.

        Example:
            >>> img = np.full((200, 200, 3), 128, np.uint8)
            >>> QualityPolicy().reasons(face_quality(img, np.array([0, 0, 30, 30]), None, 0.5), 0.5)
            ['face_too_small', 'low_detection_score']
        """
        out = []
        if quality.face_size < self.min_face:
            out.append("face_too_small")
        if float(det_score) < self.min_det_score:
            out.append("low_detection_score")
        angles = [a for a in (quality.yaw, quality.pitch, quality.roll) if a is not None]
        if angles and max(abs(a) for a in angles) > self.max_angle:
            out.append("extreme_pose")
        if quality.score < self.min_quality:
            out.append("low_quality")
        return out
