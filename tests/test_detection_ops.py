"""NMS, IoU, letterbox and max_num selection, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.ops.boxes import box_area, iou_matrix, letterbox, select_max_num
from facelab.ops.nms import nms


def test_iou_matrix_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 4, 4]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    iou = iou_matrix(a, b)
    # [0,0,10,10] vs [5,0,15,10]: inter 5*10=50, union 100+100-50=150
    assert iou[0].tolist() == pytest.approx([50 / 150, 1.0, 0.0])
    # [0,0,4,4] inside [0,0,10,10]: 16 / 100
    assert iou[1].tolist() == pytest.approx([0.0, 0.16, 0.0])
    # +1 convention: both areas 11*11 = 121, inter 6*11 = 66 -> 66 / (242 - 66)
    assert iou_matrix(a[:1], b[:1], plus_one=True)[0, 0] == pytest.approx(66 / 176)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_box_area_conventions():
    boxes = np.array([[0, 0, 9, 4], [5, 5, 4, 4]], np.float32)
    assert box_area(boxes).tolist() == [36.0, 0.0]
    assert box_area(boxes, plus_one=True).tolist() == [50.0, 0.0]


def test_nms_suppresses_above_threshold_plus_one_convention():
    boxes = np.array(
        [
            [0, 0, 9, 9],  # area 100 with +1
            [0, 0, 9, 4],  # inter 50 with box 0, union 100 -> IoU 0.5
            [0, 0, 9, 5],  # inter 60, union 100 -> IoU 0.6
            [50, 50, 59, 59],
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU 0.5 is not > 0.5: kept; 0.6 > 0.5: suppressed. Order: best score first.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 1]
    assert nms(boxes, scores, 0.4).tolist() == [3, 0]
    # box 1 vs box 2: inter 50, union 60 -> 0.833; with threshold 0.55 box 2 is removed by box 0 first.
    assert nms(boxes, scores, 0.55).tolist() == [3, 0, 1]


def test_nms_without_plus_one_and_ties():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]], np.float32)
    # Without +1: IoU(box0, box1) = 50 / 100 = 0.5 -> kept at 0.5, suppressed at 0.45.
    assert nms(boxes, np.array([0.9, 0.8, 0.1], np.float32), 0.5, plus_one=False).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8, 0.1], np.float32), 0.45, plus_one=False).tolist() == [0]
    # Equal scores keep input order (stable sort): index 0 wins over its duplicate 2.
    assert nms(boxes[[0, 2]], np.array([0.5, 0.5], np.float32), 0.3).tolist() == [0]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


def test_letterbox_wide_image():
    img = np.full((100, 200, 3), 200, np.uint8)
    canvas, scale = letterbox(img, (64, 64))
    # H/W = 0.5 <= 1: new_w = 64, new_h = int(64 * 0.5) = 32, scale = 32 / 100
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert scale == pytest.approx(0.32)
    assert (canvas[:32, :64] == 200).all() and (canvas[32:] == 0).all()


def test_letterbox_tall_image_and_truncation():
    img = np.full((300, 100, 3), 7, np.uint8)
    canvas, scale = letterbox(img, (640, 640))
    # H/W = 3 > 1: new_h = 640, new_w = int(640 / 3) = 213, scale = 640 / 300
    assert scale == pytest.approx(640 / 300)
    assert (canvas[:, :213] == 7).all() and (canvas[:, 213:] == 0).all()
    canvas, scale = letterbox(np.ones((333, 500, 3), np.uint8), (640, 480))
    # H/W = 0.666 < 0.75: new_w = 640, new_h = int(640 * 0.666) = 426
    assert canvas.shape == (480, 640, 3) and scale == pytest.approx(426 / 333)
    assert canvas[425, 0, 0] == 1 and canvas[426, 0, 0] == 0


def test_letterbox_matches_cv2_resize_bilinear():
    import cv2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)
    canvas, _ = letterbox(img, (160, 160))
    np.testing.assert_array_equal(canvas[:100, :160], cv2.resize(img, (160, 100), interpolation=cv2.INTER_LINEAR))


def test_select_max_num_default_and_max():
    boxes = np.array(
        [
            [0, 0, 40, 40],  # area 1600, centre (20, 20): offset^2 = 80^2 + 30^2 = 7300 -> 1600 - 14600
            [90, 40, 110, 60],  # area 400, centre (100, 50) = image centre -> 400
            [150, 10, 200, 90],  # area 4000, centre (175, 50): offset^2 = 75^2 = 5625 -> 4000 - 11250
        ],
        np.float32,
    )
    shape = (101, 200, 3)  # centre (W // 2, H // 2) = (100, 50)
    assert select_max_num(boxes, shape, 2).tolist() == [1, 2]
    assert select_max_num(boxes, shape, 2, "max").tolist() == [2, 0]
    assert select_max_num(boxes, shape, 1, "max").tolist() == [2]
    assert select_max_num(boxes, shape, 0).tolist() == [0, 1, 2]
    assert select_max_num(boxes, shape, 3).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="metric"):
        select_max_num(boxes, shape, 1, "largest")
