"""InsightFace's ``utils.face_align`` on facelab's alignment functions.

``estimate_norm`` / ``norm_crop`` / ``norm_crop2`` use InsightFace's ArcFace five-point template
(scaled for crop sides that are multiples of 112; for multiples of 128, the 112 template
shifted by 8 px per 128 in ``x``) and a least-squares similarity transform; ``transform`` is
InsightFace's box-centred crop (scale, translate, rotate). Keypoints are ``(5, 2)`` image
pixels in InsightFace's order (image-left eye, image-right eye, nose, mouth corners); images are
``(H, W, 3)`` ``uint8`` BGR. Bad arguments raise :class:`~facelab.errors.ConfigError` instead of
InsightFace's ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelab.alignment import transform as _t
from facelab.alignment.templates import arcface_points

__all__ = [
    "arcface_dst",
    "estimate_norm",
    "norm_crop",
    "norm_crop2",
    "square_crop",
    "transform",
    "trans_points2d",
    "trans_points3d",
    "trans_points",
]

#: ``(5, 2)`` ``float32`` ArcFace template for a 112 x 112 crop (InsightFace's ``arcface_dst``).
arcface_dst = arcface_points(112)


def estimate_norm(lmk: np.ndarray, image_size: int = 112, mode: str = "arcface") -> np.ndarray:
    """``(2, 3)`` ``float64`` image→crop matrix aligning ``lmk`` onto the ArcFace template.

    Args:
        lmk: ``(5, 2)`` keypoints in image pixels.
        image_size: crop side, a multiple of 112 or 128.
        mode: accepted for compatibility; InsightFace uses the ArcFace template for every mode.
    """
    return _t.estimate_norm(lmk, int(image_size))


def norm_crop(img: np.ndarray, landmark: np.ndarray, image_size: int = 112, mode: str = "arcface") -> np.ndarray:
    """``(S, S, 3)`` aligned crop (bilinear, black border) for the ``(5, 2)`` keypoints ``landmark``."""
    return _t.norm_crop(img, landmark, int(image_size))  # type: ignore[return-value]


def norm_crop2(
    img: np.ndarray, landmark: np.ndarray, image_size: int = 112, mode: str = "arcface"
) -> tuple[np.ndarray, np.ndarray]:
    """``(crop, M)``: :func:`norm_crop` and its ``(2, 3)`` image→crop matrix."""
    return _t.norm_crop(img, landmark, int(image_size), return_matrix=True)  # type: ignore[return-value]


def square_crop(im: np.ndarray, S: int) -> tuple[np.ndarray, float]:  # noqa: N803  InsightFace's argument name
    """Resize ``im`` so its longer side is ``S`` and paste it at the top-left of a black ``S`` x ``S`` canvas.

    Returns:
        ``(canvas, scale)``: the ``(S, S, 3)`` ``uint8`` canvas and the resize factor.
    """
    import cv2

    height, width = im.shape[:2]
    if height > width:
        new_h, new_w, scale = S, int(float(width) / height * S), float(S) / height
    else:
        new_w, new_h, scale = S, int(float(height) / width * S), float(S) / width
    canvas = np.zeros((S, S, 3), dtype=np.uint8)
    canvas[:new_h, :new_w, :] = cv2.resize(im, (new_w, new_h))
    return canvas, scale


def transform(
    data: np.ndarray, center: Sequence[float], output_size: int, scale: float, rotation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop of side ``output_size`` around ``center`` (``scale`` crop px per image px, ``rotation`` deg).

    Returns:
        ``(crop, M)``: the crop and its ``(2, 3)`` ``float64`` image→crop matrix.
    """
    return _t.warp_crop(data, center, int(output_size), float(scale), float(rotation))


def trans_points2d(pts: np.ndarray, M: np.ndarray) -> np.ndarray:  # noqa: N803
    """Apply the ``(2, 3)`` matrix ``M`` to ``(N, 2)`` points; ``float32``."""
    return _t.transform_points_2d(pts, M)


def trans_points3d(pts: np.ndarray, M: np.ndarray) -> np.ndarray:  # noqa: N803
    """Apply ``M`` to the ``x, y`` of ``(N, 3)`` points and scale ``z`` by ``M``'s scale; ``float32``."""
    return _t.transform_points_3d(pts, M)


def trans_points(pts: np.ndarray, M: np.ndarray) -> np.ndarray:  # noqa: N803
    """:func:`trans_points2d` for ``(N, 2)`` points, :func:`trans_points3d` for ``(N, 3)``."""
    return _t.transform_points(pts, M)
