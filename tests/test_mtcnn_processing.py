"""MTCNN's numpy steps against direct, loop-by-loop transcriptions of the rules they implement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.mtcnn import processing as P
from facelab.mtcnn.fused import rotate_points_in_square


def _tf_resize_area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """TensorFlow's ResizeArea kernel (align_corners=False), one output pixel at a time, float32 scales."""
    in_h, in_w = img.shape[:2]
    hs, ws = np.float32(in_h / np.float32(h)), np.float32(in_w / np.float32(w))
    out = np.zeros((h, w, img.shape[2]), np.float64)
    for y in range(h):
        y0, y1 = np.float32(y * hs), np.float32((y + 1) * hs)
        for x in range(w):
            x0, x1 = np.float32(x * ws), np.float32((x + 1) * ws)
            acc = np.zeros(img.shape[2])
            for i in range(math.floor(y0), math.ceil(y1)):
                wy = (hs if i + 1 > y1 else i + 1 - y0) if i < y0 else (y1 - i if i + 1 > y1 else 1.0)
                for j in range(math.floor(x0), math.ceil(x1)):
                    wx = (ws if j + 1 > x1 else j + 1 - x0) if j < x0 else (x1 - j if j + 1 > x1 else 1.0)
                    acc += img[min(i, in_h - 1), min(j, in_w - 1)] * wy * wx
            out[y, x] = acc / (hs * ws)
    return out


def test_area_resize_is_tensorflows_resize_area():
    rng = np.random.default_rng(1)
    img = rng.uniform(-1, 1, (37, 53, 3)).astype(np.float32)
    for h, w in [(26, 37), (18, 26), (12, 17), (37, 20)]:
        # TensorFlow computes the cell bounds in float32, OpenCV in double: a few 1e-6 apart
        np.testing.assert_allclose(P.area_resize(img, (h, w)), _tf_resize_area(img, h, w), atol=1e-5)
    with pytest.raises(ConfigError):
        P.area_resize(img, (40, 10))


def test_pyramid_follows_the_package_formula():
    scales = P.pyramid_scales(886, 1280)
    assert len(scales) == round(math.log(886 / 12) / -math.log(0.709) - 1) == 12
    np.testing.assert_allclose(scales, 0.6 * 0.709 ** np.arange(12))
    assert P.pyramid_scales(500, 500, min_face=40)[0] == pytest.approx(0.3)
    assert P.level_size(886, 1280, 0.6) == (531, 768)  # truncated, as TensorFlow's cast
    assert len(P.pyramid_scales(5, 5)) == 0
    with pytest.raises(ConfigError):
        P.pyramid_scales(100, 100, min_face=0)


def _nms_matrix(boxes: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """The package's rule with its full N x N overlap matrix."""
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    iw = np.maximum(0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    ih = np.maximum(0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = iw * ih
    denom = area[:, None] + area[None] - inter if method == "union" else np.minimum(area[:, None], area[None])
    fail = (inter / denom > threshold) & np.triu(np.ones((len(boxes),) * 2, bool), k=1)
    return np.nonzero(~fail.any(axis=0))[0]


@pytest.mark.parametrize("method", ["union", "min"])
def test_nms_equals_the_full_matrix_rule(method):
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 300, (800, 2))
    size = rng.uniform(8, 60, (800, 1))
    boxes = np.concatenate([xy, xy + size * rng.uniform(0.8, 1.2, (800, 2))], axis=1)
    for threshold in (0.3, 0.5, 0.7):
        np.testing.assert_array_equal(P.mtcnn_nms(boxes, threshold, method), _nms_matrix(boxes, threshold, method))
    assert P.mtcnn_nms(np.zeros((0, 4)), 0.5).shape == (0,)
    with pytest.raises(ConfigError):
        P.mtcnn_nms(boxes, 0.5, "iou")


def _tf_crop_and_resize(img: np.ndarray, box_norm: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow's CropAndResize (bilinear, extrapolation 0) for one box ``[y1, x1, y2, x2]``, loops."""
    h, w = img.shape[:2]
    y1, x1, y2, x2 = (np.float32(v) for v in box_norm)
    hs = (y2 - y1) * np.float32(h - 1) / np.float32(size - 1)
    ws = (x2 - x1) * np.float32(w - 1) / np.float32(size - 1)
    out = np.zeros((size, size, img.shape[2]), np.float32)
    for y in range(size):
        in_y = y1 * np.float32(h - 1) + y * hs
        if in_y < 0 or in_y > h - 1:
            continue
        t, b = math.floor(in_y), math.ceil(in_y)
        yl = in_y - t
        for x in range(size):
            in_x = x1 * np.float32(w - 1) + x * ws
            if in_x < 0 or in_x > w - 1:
                continue
            lft, r = math.floor(in_x), math.ceil(in_x)
            xl = in_x - lft
            top = img[t, lft] + (img[t, r] - img[t, lft]) * xl
            bottom = img[b, lft] + (img[b, r] - img[b, lft]) * xl
            out[y, x] = top + (bottom - top) * yl
    return out


def test_crop_and_resize_is_tensorflows_with_the_packages_normalisation():
    rng = np.random.default_rng(3)
    img = rng.uniform(-1, 1, (60, 80, 3)).astype(np.float32)
    boxes = np.array([[10.0, 5.0, 40.5, 35.5], [-8.0, -6.0, 20.0, 22.0], [70.0, 50.0, 95.0, 75.0], [0, 0, 80, 60]])
    got = P.crop_and_resize(img, boxes, 24)
    for box, crop in zip(boxes, got):
        norm = np.array([box[1] / 60, box[0] / 80, box[3] / 60, box[2] / 80])  # the package divides by H, W
        np.testing.assert_allclose(crop, _tf_crop_and_resize(img, norm, 24), atol=1e-5)
    assert (got[1, 0] == 0).all() and (got[2, -1] == 0).all()  # outside the image: 0 (mid-grey)
    assert P.crop_and_resize(img, np.zeros((0, 4)), 48).shape == (0, 48, 48, 3)


def test_candidates_square_calibrate_and_landmarks():
    prob = np.zeros((3, 4), np.float32)
    prob[1, 2] = 0.9
    prob[2, 0] = 0.7
    reg = np.zeros((4, 3, 4), np.float32)
    reg[:, 1, 2] = [0.1, 0.0, -0.1, 0.2]
    boxes, scores = P.pnet_candidates(prob, reg, scale=0.5, threshold=0.6)
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)
    # cell (y=1, x=2): window [2x+1, 2y+1, 2x+12, 2y+12] moved by reg * 11, divided by the scale
    np.testing.assert_allclose(boxes[0], np.array([5 + 1.1, 3, 16 - 1.1, 14 + 2.2]) / 0.5, rtol=1e-6)
    sq = P.square_boxes(np.array([[0.0, 0.0, 10.0, 20.0]]))
    np.testing.assert_allclose(sq, [[-5, 0, 15, 20]])
    np.testing.assert_allclose(P.calibrate(np.array([[0, 0, 9, 9.0]]), np.array([[0.1, 0, 0, -0.2]])), [[1, 0, 9, 7]])
    pts = P.onet_landmarks(np.array([[10, 20, 19, 29.0]]), np.array([[0.5] * 5 + [0.0] * 5]))
    np.testing.assert_allclose(pts[0], [[14, 19]] * 5)


def test_points_of_a_turned_square_map_back():
    rng = np.random.default_rng(4)
    img = rng.uniform(size=(8, 8))
    for k in range(4):
        turned = np.rot90(img, k)
        for i, j in [(0, 0), (2, 5), (7, 1)]:
            # pixel (row i, col j) of the turned square, as normalised centre coordinates
            u, v = rotate_points_in_square(np.array([[(j + 0.5) / 8, (i + 0.5) / 8]]), k)[0]
            assert turned[i, j] == img[int(v * 8), int(u * 8)]
