"""MTCNN's processing between the three networks, as pure numpy functions.

The facts (learned from ipazc/mtcnn 1.0.0's ``stages/`` and ``utils/``, with TensorFlow's
``ResizeArea`` and ``CropAndResize`` kernels for the two image operations; our own code) are:

* **Input**: RGB, ``(pixel - 127.5) / 128``, NHWC for the original networks (our ONNX graphs
  take the same values as NCHW).
* **Pyramid** (:func:`pyramid_scales`): ``count = round(log(min_side / 12) / log(1 / 0.709) - 1)``
  levels with scales ``(12 / min_face) * 0.709**k``; each level is the normalised image resized
  with TensorFlow's *area* filter to ``trunc(H * s) x trunc(W * s)`` (:func:`area_resize`).
* **P-Net** (:func:`pnet_candidates`): a cell ``(y, x)`` of the score map whose face probability
  exceeds 0.6 gives the window ``[2x + 1, 2y + 1, 2x + 12, 2y + 12]`` (level pixels), moved by
  the regression times 11 (the window size minus one) and divided by the scale. Per level: sort by
  score, NMS (IoU > 0.5 over the union); then all levels: sort, NMS (IoU > 0.7), squared
  (:func:`square_boxes`).
* **NMS** (:func:`mtcnn_nms`): *not* greedy: a box is dropped when any better-scored box
  overlaps it above the threshold, even one that was itself dropped; areas are
  ``(x2 - x1) * (y2 - y1)`` (no ``+1``); ``method="min"`` divides by the smaller area.
* **R-Net / O-Net inputs** (:func:`crop_and_resize`): TensorFlow's bilinear ``crop_and_resize``
  of the normalised image with the box divided by the image size (``x1 / W``...) while the kernel
  maps normalised coordinates through ``W - 1`` (so boxes shrink by ``(W - 1) / W``: reproduced
  here); pixels outside the image are 0 (mid-grey).
* **Refinement** (:func:`calibrate`): ``box += offsets * [w, h, w, h]`` with ``w = x2 - x1 + 1``;
  R-Net keeps probability > 0.7, NMS 0.7 (union), squares again; O-Net keeps > 0.8 (the
  package's default ``threshold_onet``), NMS 0.7 with ``method="min"``.
* **Landmarks** (:func:`onet_landmarks`): from O-Net's *input* box:
  ``x = w * lx + x1 - 1``, ``y = h * ly + y1 - 1``; O-Net gives the five ``x`` then the five ``y``
  in the order left eye, right eye, nose, left mouth, right mouth as seen in the image: facelab's
  :class:`~facelab.structures.FaceKeypoint` order.
* **Output**: the package clips boxes to ``[0, W - 1] x [0, H - 1]`` and rounds boxes and points to
  integers for its JSON; facelab keeps the float values, unclipped (as its other detectors).

Boxes here are ``(N, 4)`` ``float64`` ``[x1, y1, x2, y2]`` in pixels.
"""

from __future__ import annotations

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "PNET_CELL",
    "PNET_STRIDE",
    "MIN_SIZE",
    "pyramid_scales",
    "level_size",
    "area_resize",
    "pnet_candidates",
    "mtcnn_nms",
    "square_boxes",
    "crop_and_resize",
    "calibrate",
    "onet_landmarks",
]

#: P-Net's window (12 px) and stride (2 px) on a pyramid level.
PNET_CELL = 12
PNET_STRIDE = 2
#: The smallest side a pyramid level is built for (P-Net's window).
MIN_SIZE = 12


def pyramid_scales(height: int, width: int, min_face: float = 20.0, factor: float = 0.709) -> np.ndarray:
    """The pyramid's scales for an image, exactly as ipazc/mtcnn 1.0.0 computes them.

    The number of levels depends on the image only (``round(log(min_side / 12) / -log(factor) - 1)``),
    the first scale on ``min_face`` (``12 / min_face``).

    Args:
        height: image height in pixels.
        width: image width in pixels.
        min_face: smallest face side to find, in pixels (20 by default).
        factor: ratio between consecutive levels (0.709).

    Returns:
        ``(L,)`` ``float64`` scales, largest first (may be empty for tiny images).

    Example:
        >>> pyramid_scales(886, 1280).round(4).tolist()[:3], len(pyramid_scales(886, 1280))
        ([0.6, 0.4254, 0.3016], 12)
    """
    if min_face <= 0 or not 0 < factor < 1:
        raise ConfigError(f"min_face must be > 0 and factor in (0, 1), got {min_face} and {factor}")
    min_side = min(int(height), int(width))
    if min_side <= 0:
        return np.zeros((0,), np.float64)
    count = round(-(np.log(min_side / MIN_SIZE) / np.log(factor) + 1))
    return (MIN_SIZE / float(min_face)) * factor ** np.arange(max(int(count), 0))


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` of a pyramid level: ``trunc(H * scale)``, ``trunc(W * scale)`` (TensorFlow's cast)."""
    return int(np.float64(height) * scale), int(np.float64(width) * scale)


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-filter resize of a float image (TensorFlow's ``ResizeArea``, for downscaling).

    Each output pixel ``(i, j)`` is the mean of the input over ``[i * sy, (i + 1) * sy) x
    [j * sx, (j + 1) * sx)`` (``sy = H / h``, ``sx = W / w``), partial pixels weighted by the
    fraction covered, as TensorFlow's kernel computes it; OpenCV's ``INTER_AREA`` computes the same
    means (within 1e-5: TensorFlow computes the cell bounds in float32; ``tests/test_mtcnn_processing.py``)
    and is used here.

    Args:
        image: ``(H, W, C)`` ``float32``.
        size: ``(h, w)`` output size, at most the input size.

    Returns:
        ``(h, w, C)`` ``float32``.

    Example:
        >>> img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
        >>> area_resize(img, (2, 2))[..., 0].tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    import cv2

    h, w = int(size[0]), int(size[1])
    height, width = image.shape[:2]
    if h <= 0 or w <= 0 or h > height or w > width:
        raise ConfigError(f"area_resize: output size {size} must be positive and at most {image.shape[:2]}")
    if (h, w) == (height, width):
        return np.ascontiguousarray(image, dtype=np.float32)
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, -1)


def pnet_candidates(
    prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of one pyramid level whose face probability exceeds ``threshold``, in image pixels.

    Args:
        prob: ``(h, w)`` face probability map of P-Net on the level.
        reg: ``(4, h, w)`` regression map (``dx1, dy1, dx2, dy2`` in window units).
        scale: the level's scale.
        threshold: P-Net's threshold (0.6).

    Returns:
        ``(boxes, scores)``: ``(N, 4)`` ``float64`` and ``(N,)`` ``float64``, best score first (the
        package's order: ``argsort`` reversed), before any NMS.
    """
    ys, xs = np.nonzero(prob > threshold)
    if len(ys) == 0:
        return np.zeros((0, 4)), np.zeros((0,))
    scores = prob[ys, xs].astype(np.float64)
    r = reg[:, ys, xs].astype(np.float64)
    size = PNET_CELL - 1
    x1 = PNET_STRIDE * xs + 1 + r[0] * size
    y1 = PNET_STRIDE * ys + 1 + r[1] * size
    x2 = PNET_STRIDE * xs + PNET_CELL + r[2] * size
    y2 = PNET_STRIDE * ys + PNET_CELL + r[3] * size
    boxes = np.stack([x1, y1, x2, y2], axis=1) / scale
    order = np.argsort(scores)[::-1]
    return boxes[order], scores[order]


def _overlap_pairs(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)``, ``i < j``, whose boxes intersect (a sweep along ``x``)."""
    n = len(boxes)
    order = np.argsort(boxes[:, 0], kind="stable")
    x1 = boxes[order, 0]
    x2 = boxes[order, 2]
    # For the box at sorted position p, candidates are the boxes q > p with x1[q] < x2[p].
    ends = np.searchsorted(x1, x2, side="left")
    counts = np.maximum(ends - np.arange(n) - 1, 0)
    total = int(counts.sum())
    if total == 0:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    first = np.repeat(np.arange(n), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    second = first + 1 + offsets
    a, b = order[first], order[second]
    return np.minimum(a, b), np.maximum(a, b)


def mtcnn_nms(boxes: np.ndarray, threshold: float, method: str = "union", chunk: int = 4_000_000) -> np.ndarray:
    """MTCNN's NMS: keep box ``j`` unless an *earlier* box (any ``i < j``) overlaps it above ``threshold``.

    Boxes must already be in priority order (best score first). Unlike greedy NMS, a box that was
    itself suppressed still suppresses the boxes after it (the package's rule). Only intersecting
    pairs are examined (a sweep along ``x``), so large images with thousands of P-Net windows
    need no ``N x N`` matrix.

    Args:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` in priority order.
        threshold: suppress when the overlap is strictly greater.
        method: ``"union"`` (IoU) or ``"min"`` (intersection over the smaller area).
        chunk: pairs evaluated per step (bounds the memory).

    Returns:
        ``(K,)`` ``int64`` indices of the kept boxes, in input order.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10.0]])
        >>> mtcnn_nms(b, 0.7).tolist()  # box 2 overlaps box 1 (dropped) above 0.7: dropped too
        [0]
    """
    if method not in ("union", "min"):
        raise ConfigError(f"NMS method must be 'union' or 'min', not {method!r}")
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros((0,), np.int64)
    first, second = _overlap_pairs(b)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(n, bool)
    for start in range(0, len(first), chunk):
        i, j = first[start : start + chunk], second[start : start + chunk]
        w = np.maximum(0.0, np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]))
        h = np.maximum(0.0, np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]))
        inter = w * h
        denom = area[i] + area[j] - inter if method == "union" else np.minimum(area[i], area[j])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = inter / denom
        suppressed[j[ratio > threshold]] = True
    return np.nonzero(~suppressed)[0].astype(np.int64)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Make boxes square around their centres, side = the longer side (``x2 - x1`` or ``y2 - y1``)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Bilinear crops of ``image`` as TensorFlow's ``crop_and_resize`` is called by the package.

    The box ``[x1, y1, x2, y2]`` (pixels) is normalised by the image size (``y1 / H``...) and the
    crop's sample ``k`` lies at ``y1n * (H - 1) + k * (y2n - y1n) * (H - 1) / (size - 1)``
    (likewise for ``x``); samples outside ``[0, H - 1]`` are 0. Arithmetic in ``float32`` as the
    kernel.

    Args:
        image: ``(H, W, C)`` ``float32`` normalised image.
        boxes: ``(N, 4)`` pixel boxes.
        size: crop side (24 for R-Net, 48 for O-Net).

    Returns:
        ``(N, size, size, C)`` ``float32``.
    """
    height, width = image.shape[:2]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(b)
    channels = image.shape[2]
    if n == 0:
        return np.zeros((0, size, size, channels), np.float32)
    f32 = np.float32
    norm = (b / np.array([width, height, width, height], np.float64)).astype(f32)
    x1n, y1n, x2n, y2n = norm[:, 0], norm[:, 1], norm[:, 2], norm[:, 3]
    k = np.arange(size, dtype=f32)
    hs = (y2n - y1n) * f32(height - 1) / f32(size - 1)
    ws = (x2n - x1n) * f32(width - 1) / f32(size - 1)
    in_y = y1n[:, None] * f32(height - 1) + k[None, :] * hs[:, None]  # (N, size)
    in_x = x1n[:, None] * f32(width - 1) + k[None, :] * ws[:, None]
    valid_y = (in_y >= 0) & (in_y <= height - 1)
    valid_x = (in_x >= 0) & (in_x <= width - 1)
    top = np.clip(np.floor(in_y), 0, height - 1).astype(np.int64)
    bottom = np.clip(np.ceil(in_y), 0, height - 1).astype(np.int64)
    left = np.clip(np.floor(in_x), 0, width - 1).astype(np.int64)
    right = np.clip(np.ceil(in_x), 0, width - 1).astype(np.int64)
    y_lerp = (in_y - np.floor(in_y)).astype(f32)
    x_lerp = (in_x - np.floor(in_x)).astype(f32)
    flat = np.ascontiguousarray(image, dtype=f32).reshape(height * width, channels)
    row_t = (top * width)[:, :, None]
    row_b = (bottom * width)[:, :, None]
    col_l, col_r = left[:, None, :], right[:, None, :]
    xl = x_lerp[:, None, :, None]
    t_l, t_r = np.take(flat, row_t + col_l, axis=0), np.take(flat, row_t + col_r, axis=0)  # (N, size, size, C)
    upper = t_l + (t_r - t_l) * xl
    b_l, b_r = np.take(flat, row_b + col_l, axis=0), np.take(flat, row_b + col_r, axis=0)
    lower = b_l + (b_r - b_l) * xl
    out = upper + (lower - upper) * y_lerp[:, :, None, None]
    mask = valid_y[:, :, None] & valid_x[:, None, :]
    out[~mask] = 0.0
    return out.astype(f32)


def calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move boxes by R-Net/O-Net offsets: ``box += offsets * [w, h, w, h]`` with ``w = x2 - x1 + 1``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    return b + np.asarray(offsets, np.float64).reshape(-1, 4) * np.stack([w, h, w, h], axis=1)


def onet_landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Five points in pixels from O-Net's ``(N, 10)`` output (five x, then five y) and its input boxes.

    Returns:
        ``(N, 5, 2)`` ``float64``, :class:`~facelab.structures.FaceKeypoint` order.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    p = np.asarray(points, np.float64).reshape(-1, 10)
    w = (b[:, 2] - b[:, 0] + 1)[:, None]
    h = (b[:, 3] - b[:, 1] + 1)[:, None]
    xs = w * p[:, :5] + b[:, 0:1] - 1
    ys = h * p[:, 5:] + b[:, 1:2] - 1
    return np.stack([xs, ys], axis=2)
