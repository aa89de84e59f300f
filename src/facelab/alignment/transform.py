"""Similarity transforms and face crops: five-point alignment and box-centred crops.

Two kinds of crop feed facelab's models:

* **Keypoint alignment** (recognisers, the face swapper): the similarity transform that maps the
  five detected keypoints onto a template in the least-squares sense (Umeyama's closed form) is
  estimated with :func:`estimate_similarity`, then the image is warped with it
  (:func:`norm_crop`). With the ArcFace template this reproduces InsightFace's
  ``face_align.estimate_norm`` / ``norm_crop``.
* **Box crops** (dense landmarks, gender/age): a square crop centred on the box centre, scaled so
  that ``expand * max(w, h)`` box pixels fill the crop, optionally rotated
  (:func:`crop_transform`, :func:`bbox_crop_transform`, :func:`warp_crop`), as InsightFace's
  ``face_align.transform``.

Conventions: images are ``(H, W, 3)`` ``uint8`` BGR; points are ``(x, y)`` pixels with ``x``
right and ``y`` down; a transform ``M`` is a ``(2, 3)`` ``float64`` matrix mapping a source
point ``p`` to ``M[:, :2] @ p + M[:, 2]`` (OpenCV's ``warpAffine`` convention: ``M`` maps
*image* coordinates to *crop* coordinates). Warps are bilinear with a black (0) border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from facelab.alignment.templates import arcface_points, get_template
from facelab.errors import ConfigError, ImageError
from facelab.ops.normalize import Normalization, to_tensor
from facelab.runtime.batching import run_in_chunks
from facelab.runtime.session import OrtSession

__all__ = [
    "estimate_similarity",
    "estimate_norm",
    "template_points",
    "norm_crop",
    "norm_crop_batch",
    "crop_transform",
    "bbox_crop_transform",
    "warp_crop",
    "transform_points_2d",
    "transform_points_3d",
    "transform_points",
    "invert_affine",
    "pair_images",
    "bbox_crop_batch",
    "run_box_crops",
    "CROP_EXPAND",
]

#: Box sides per crop side for landmark and attribute crops (InsightFace's 1.5).
CROP_EXPAND = 1.5


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) from ``src`` to ``dst``.

    Umeyama's closed-form solution ("Least-squares estimation of transformation parameters
    between two point patterns", PAMI 1991): with centred point sets, the rotation comes from
    the SVD of their cross-covariance (reflections excluded), the scale from the singular
    values and the source variance, and the translation from the means. The result minimises
    ``sum ||dst_i - (s R src_i + t)||^2``; it equals scikit-image's
    ``SimilarityTransform.estimate`` (which InsightFace uses) to float precision.

    Args:
        src: ``(N, 2)`` source points (e.g. detected keypoints), ``N >= 2``, any float dtype.
        dst: ``(N, 2)`` destination points (e.g. a template).

    Returns:
        ``(2, 3)`` ``float64`` matrix ``[s R | t]`` mapping ``src`` onto ``dst``.

    Raises:
        ConfigError: shapes differ or are not ``(N, 2)``, values are not finite, or the source
            points are degenerate (all equal), so no transform is defined.

    Example:
        >>> import numpy as np
        >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> np.round(estimate_similarity(src, 2 * src + 5), 6).tolist()
        [[2.0, 0.0, 5.0], [0.0, 2.0, 5.0]]
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ConfigError(
            f"estimate_similarity needs two (N, 2) point arrays with N >= 2, got {src.shape} and {dst.shape}"
        )
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ConfigError("estimate_similarity: points contain NaN or infinity")
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c**2).sum()) / n
    if src_var <= 1e-20:
        raise ConfigError("estimate_similarity: the source points all coincide; no similarity transform is defined")
    cov = dst_c.T @ src_c / n
    u, sing, vt = np.linalg.svd(cov)
    # Exclude reflections: flip the weakest axis when the best orthogonal map would mirror.
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rot = u @ np.diag(signs) @ vt
    scale = float(sing @ signs) / src_var
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = dst_mean - scale * rot @ src_mean
    return out


def template_points(template: str | np.ndarray | None, image_size: int) -> np.ndarray:
    """Destination points of a five-point template for an ``image_size`` crop.

    Args:
        template: ``None`` or a name starting with ``"arcface"`` for InsightFace's ArcFace rule
            (:func:`~facelab.alignment.templates.arcface_points`: scaled for multiples of 112,
            shifted +8 px per 128 for multiples of 128); another registered template name
            (scaled to ``image_size``); or explicit ``(5, 2)`` crop coordinates, used as given.
        image_size: side of the square crop in pixels.

    Returns:
        ``(5, 2)`` ``float32`` points in crop pixels.
    """
    if template is None or (isinstance(template, str) and template.startswith("arcface")):
        try:
            return arcface_points(int(image_size))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if isinstance(template, str):
        try:
            return get_template(template).for_size(int(image_size))
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    points = np.asarray(template, dtype=np.float32)
    if points.shape != (5, 2):
        raise ConfigError(f"template points must have shape (5, 2), got {points.shape}")
    return points


def _check_kps(kps: np.ndarray) -> np.ndarray:
    kps = np.asarray(kps)
    if kps.shape != (5, 2):
        raise ConfigError(f"five-point keypoints must have shape (5, 2), got {kps.shape}")
    return kps


def estimate_norm(kps: np.ndarray, image_size: int = 112, template: str | np.ndarray | None = None) -> np.ndarray:
    """Transform that aligns five keypoints onto a template: InsightFace's ``estimate_norm``.

    Args:
        kps: ``(5, 2)`` keypoints in image pixels (:class:`~facelab.structures.FaceKeypoint` order).
        image_size: side of the aligned crop (ArcFace: a multiple of 112 or 128).
        template: see :func:`template_points` (default: ArcFace).

    Returns:
        ``(2, 3)`` ``float64`` matrix mapping image pixels to crop pixels.

    Raises:
        ConfigError: wrong keypoint shape, unsupported size, or degenerate keypoints.
    """
    return estimate_similarity(_check_kps(kps), template_points(template, image_size))


def _check_image(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0:
        shape = getattr(img, "shape", None)
        raise ImageError(f"expected an (H, W, 3) uint8 BGR image, got {type(img).__name__} of shape {shape}")
    return img


def _warp(img: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(img, np.asarray(matrix, dtype=np.float64), (int(size), int(size)), borderValue=0.0)


def norm_crop(
    img: np.ndarray,
    kps: np.ndarray,
    image_size: int = 112,
    template: str | np.ndarray | None = None,
    *,
    return_matrix: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Aligned square face crop: InsightFace's ``norm_crop`` (``norm_crop2`` with ``return_matrix``).

    Args:
        img: ``(H, W, 3)`` ``uint8`` BGR image.
        kps: ``(5, 2)`` keypoints in image pixels.
        image_size: side ``S`` of the crop.
        template: see :func:`template_points` (default: ArcFace).
        return_matrix: also return the ``(2, 3)`` image→crop matrix.

    Returns:
        ``(S, S, 3)`` ``uint8`` BGR crop (bilinear, black border), or ``(crop, M)``.

    Example:
        >>> import numpy as np
        >>> from facelab.alignment.templates import arcface_points
        >>> norm_crop(np.zeros((200, 200, 3), np.uint8), arcface_points(112) + 40).shape
        (112, 112, 3)
    """
    matrix = estimate_norm(kps, image_size, template)
    crop = _warp(_check_image(img), matrix, image_size)
    return (crop, matrix) if return_matrix else crop


def norm_crop_batch(
    img: np.ndarray, kps: np.ndarray, image_size: int = 112, template: str | np.ndarray | None = None
) -> np.ndarray:
    """Aligned crops of several faces of one image.

    Args:
        img: ``(H, W, 3)`` ``uint8`` BGR image.
        kps: ``(N, 5, 2)`` keypoints, one set per face.
        image_size: side ``S`` of the crops.
        template: see :func:`template_points` (default: ArcFace).

    Returns:
        ``(N, S, S, 3)`` array of the image's dtype (``(0, S, S, 3)`` for no face); crop ``i``
        equals ``norm_crop(img, kps[i], image_size)``.
    """
    img = _check_image(img)
    kps = np.asarray(kps)
    if kps.ndim != 3 or kps.shape[1:] != (5, 2):
        raise ConfigError(f"keypoints must have shape (N, 5, 2), got {kps.shape}")
    dst = template_points(template, image_size)
    channels = img.shape[2:] if img.ndim == 3 else ()
    out = np.zeros((len(kps), image_size, image_size, *channels), dtype=img.dtype)
    for i, points in enumerate(kps):
        out[i] = _warp(img, estimate_similarity(points, dst), image_size)
    return out


def crop_transform(
    center: Sequence[float] | np.ndarray, output_size: int, scale: float, rotation_deg: float = 0.0
) -> np.ndarray:
    """Matrix of a square crop around ``center``: InsightFace's ``face_align.transform`` matrix.

    The image is scaled by ``scale`` about the origin, translated so that ``center`` lands on the
    origin, rotated by ``rotation_deg`` (linear part ``scale * [[cos, -sin], [sin, cos]]``; with ``y``
    down, a positive angle turns the image content clockwise on screen), and moved to the crop
    centre ``(output_size / 2, output_size / 2)``.

    Args:
        center: ``(x, y)`` image pixel placed at the crop centre.
        output_size: side of the square crop.
        scale: crop pixels per image pixel.
        rotation_deg: rotation in degrees.

    Returns:
        ``(2, 3)`` ``float64`` image→crop matrix.
    """
    c = np.asarray(center) * scale  # in the caller's precision, as InsightFace computes it
    c = np.asarray(c, dtype=np.float64).reshape(2)
    theta = float(rotation_deg) * math.pi / 180.0
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, -sin], [sin, cos]], dtype=np.float64)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = rot * float(scale)
    out[:, 2] = rot @ (-c) + output_size / 2.0
    return out


def bbox_crop_transform(bbox: Sequence[float] | np.ndarray, output_size: int, expand: float = 1.5) -> np.ndarray:
    """Matrix of the box crop InsightFace's landmark and attribute models use.

    Centre = box centre; ``scale = output_size / (expand * max(w, h))``; no rotation.

    Args:
        bbox: ``[x1, y1, x2, y2]`` (usually ``float32``; arithmetic follows its dtype as InsightFace's does).
        output_size: side of the crop (192 for landmarks, 96 for gender/age).
        expand: how many box sides fit in the crop (1.5).

    Returns:
        ``(2, 3)`` ``float64`` image→crop matrix.
    """
    box = np.asarray(bbox)
    if box.shape[-1] < 4:
        raise ConfigError(f"a box needs [x1, y1, x2, y2], got shape {box.shape}")
    w, h = box[2] - box[0], box[3] - box[1]
    side = max(w, h)
    if not side > 0:
        raise ConfigError(f"degenerate box {box[:4].tolist()}: width and height must be positive")
    center = np.asarray([(box[2] + box[0]) / 2, (box[3] + box[1]) / 2])
    scale = output_size / (side * expand)
    return crop_transform(center, output_size, scale, 0.0)


def warp_crop(
    img: np.ndarray, center: Sequence[float] | np.ndarray, output_size: int, scale: float, rotation_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around ``center``: InsightFace's ``face_align.transform``.

    Args:
        img: ``(H, W, 3)`` ``uint8`` BGR image.
        center: ``(x, y)`` image pixel placed at the crop centre.
        output_size: side of the square crop.
        scale: crop pixels per image pixel.
        rotation_deg: rotation in degrees (see :func:`crop_transform`).

    Returns:
        ``(crop, M)``: ``(output_size, output_size, 3)`` crop (bilinear, black border) and the
        ``(2, 3)`` ``float64`` image→crop matrix.
    """
    matrix = crop_transform(center, output_size, scale, rotation_deg)
    return _warp(_check_image(img), matrix, output_size), matrix


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ConfigError(f"an affine matrix must have shape (2, 3), got {matrix.shape}")
    return matrix


def transform_points_2d(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points (or the ``x, y`` of ``(N, >=2)``).

    Returns:
        ``(N, 2)`` ``float32`` transformed points.
    """
    matrix = _check_matrix(matrix)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ConfigError(f"points must have shape (N, 2), got {pts.shape}")
    return (pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def transform_points_3d(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 3)`` points: ``x, y`` mapped, ``z`` scaled.

    ``z`` is multiplied by the matrix's scale ``sqrt(M00^2 + M01^2)``, as InsightFace's
    ``trans_points3d`` does, so depth stays in the same units as ``x, y``.

    Returns:
        ``(N, 3)`` ``float32`` transformed points.
    """
    matrix = _check_matrix(matrix)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ConfigError(f"points must have shape (N, 3), got {pts.shape}")
    out = np.empty(pts.shape, dtype=np.float32)
    out[:, :2] = pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    out[:, 2] = pts[:, 2] * math.hypot(matrix[0, 0], matrix[0, 1])
    return out


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """:func:`transform_points_2d` for ``(N, 2)`` points, :func:`transform_points_3d` for ``(N, 3)``."""
    pts = np.asarray(points)
    if pts.ndim == 2 and pts.shape[1] == 3:
        return transform_points_3d(pts, matrix)
    return transform_points_2d(pts, matrix)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix (crop→image from image→crop), as ``cv2.invertAffineTransform``.

    Raises:
        ConfigError: the matrix is singular.
    """
    matrix = _check_matrix(matrix)
    linear = matrix[:, :2]
    det = float(np.linalg.det(linear))
    if abs(det) < 1e-12:
        raise ConfigError("cannot invert a singular affine matrix")
    inv = np.linalg.inv(linear)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = inv
    out[:, 2] = -inv @ matrix[:, 2]
    return out


def pair_images(images: np.ndarray | Sequence[np.ndarray], per_image: object) -> tuple[list[np.ndarray], list]:
    """Normalise the "one image or several" arguments of the batched runners.

    Args:
        images: one ``(H, W, 3)`` image, or a sequence of images.
        per_image: for one image, that image's items (boxes, keypoints, faces); for several,
            a sequence with one entry of items per image.

    Returns:
        ``(images, per_image)`` as two lists of equal length.

    Raises:
        ConfigError: the two sequences differ in length.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [images], [per_image]
    images = list(images)
    per = list(per_image)  # type: ignore[call-overload]
    if len(images) != len(per):
        raise ConfigError(f"got {len(images)} images but {len(per)} per-image entries")
    return images, per


def bbox_crop_batch(
    images: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray], output_size: int, expand: float = 1.5
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Box crops (:func:`bbox_crop_transform`) of every box of every image.

    Args:
        images: ``(H, W, 3)`` ``uint8`` BGR images.
        boxes_per_image: per image, ``(n_i, >=4)`` boxes ``[x1, y1, x2, y2, ...]``.
        output_size: side ``S`` of the crops.
        expand: box sides per crop side.

    Returns:
        ``(crops, matrices, counts)``: ``(N, S, S, 3)`` ``uint8`` crops of all boxes in order,
        ``(N, 2, 3)`` ``float64`` image→crop matrices, and ``n_i`` per image.
    """
    crops: list[np.ndarray] = []
    matrices: list[np.ndarray] = []
    counts: list[int] = []
    for img, boxes in zip(images, boxes_per_image):
        img = _check_image(img)
        boxes = np.asarray(boxes)
        if boxes.size == 0:
            counts.append(0)
            continue
        if boxes.ndim != 2 or boxes.shape[1] < 4:
            raise ConfigError(f"boxes must have shape (N, 4), got {boxes.shape}")
        counts.append(len(boxes))
        for box in boxes:
            matrix = bbox_crop_transform(box, output_size, expand)
            matrices.append(matrix)
            crops.append(_warp(img, matrix, output_size))
    if not crops:
        return np.zeros((0, output_size, output_size, 3), np.uint8), np.zeros((0, 2, 3)), counts
    return np.stack(crops), np.stack(matrices), counts


def run_box_crops(
    session: OrtSession,
    images: np.ndarray | Sequence[np.ndarray],
    boxes_per_image: object,
    input_size: int,
    normalization: Normalization,
    batch_size: int,
    expand: float = CROP_EXPAND,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Crop every box of one or several images (:func:`bbox_crop_batch`) and run a one-output model on the crops.

    Args:
        session: the model; its first input takes the ``(n, 3, S, S)`` crop tensor.
        images: one ``(H, W, 3)`` ``uint8`` BGR image or a sequence of them.
        boxes_per_image: for one image its ``(n, >=4)`` boxes ``[x1, y1, x2, y2, ...]``; for
            several, one such array per image.
        input_size: crop side ``S``.
        normalization: how crops become the input tensor (:func:`~facelab.ops.normalize.to_tensor`).
        batch_size: crops per ``run`` call for a dynamic batch axis.
        expand: box sides per crop side.

    Returns:
        ``(raw, matrices, counts)``: the model's ``(N, ...)`` output for all crops in order,
        the ``(N, 2, 3)`` ``float64`` image→crop matrices, and the number of boxes per image.
    """
    imgs, boxes = pair_images(images, boxes_per_image)
    crops, matrices, counts = bbox_crop_batch(imgs, boxes, input_size, expand)
    (raw,) = run_in_chunks(session, crops, batch_size, lambda chunk: to_tensor(chunk, normalization))
    return raw, matrices, counts
