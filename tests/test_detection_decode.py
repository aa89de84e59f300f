"""Pure decoding helpers, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelab.detection._decode import (
    anchor_centers,
    anchors_plane,
    bbox_pred,
    decode_prior_boxes,
    decode_prior_landmarks,
    decode_yunet_level,
    distance2bbox,
    distance2kps,
    generate_anchors,
    landmark_pred,
    prior_boxes,
)


def test_anchor_centers_layout_and_cache():
    c = anchor_centers(2, 3, 16, 2)
    expected = [
        [0, 0],
        [0, 0],
        [16, 0],
        [16, 0],
        [32, 0],
        [32, 0],
        [0, 16],
        [0, 16],
        [16, 16],
        [16, 16],
        [32, 16],
        [32, 16],
    ]
    assert c.dtype == np.float32 and c.tolist() == expected
    assert anchor_centers(2, 3, 16, 2) is c  # cached
    assert not c.flags.writeable
    assert anchor_centers(1, 2, 8, 1).tolist() == [[0, 0], [8, 0]]


def test_distance2bbox_and_kps():
    points = np.array([[10, 20]], np.float32)
    assert distance2bbox(points, np.array([[1, 2, 3, 4]], np.float32)).tolist() == [[9, 18, 13, 24]]
    kps = distance2kps(points, np.array([[1, -1, 2, -2, 0, 0, 5, 5, -3, 3]], np.float32))
    assert kps.tolist() == [[11, 19, 12, 18, 10, 20, 15, 25, 7, 23]]


def test_prior_boxes_biubug6_layout():
    # 20x30 input (H, W), steps 8/16/32 -> maps ceil: 3x4, 2x2, 1x1; 2 sizes each -> 2 * (12 + 4 + 1) = 34
    priors = prior_boxes((20, 30))
    assert priors.shape == (34, 4) and priors.dtype == np.float32
    # first cell (i=0, j=0) of level 0: cx = 0.5 * 8 / 30, cy = 0.5 * 8 / 20, sizes 16 then 32
    np.testing.assert_allclose(priors[0], [4 / 30, 4 / 20, 16 / 30, 16 / 20], rtol=1e-6)
    np.testing.assert_allclose(priors[1], [4 / 30, 4 / 20, 32 / 30, 32 / 20], rtol=1e-6)
    # next cell is j=1 (row-major): cx = 1.5 * 8 / 30
    np.testing.assert_allclose(priors[2], [12 / 30, 4 / 20, 16 / 30, 16 / 20], rtol=1e-6)
    # cell (i=1, j=0) starts after the 4 cells of row 0
    np.testing.assert_allclose(priors[8], [4 / 30, 12 / 20, 16 / 30, 16 / 20], rtol=1e-6)
    # level 1 starts at 24: step 16, sizes 64 and 128
    np.testing.assert_allclose(priors[24], [8 / 30, 8 / 20, 64 / 30, 64 / 20], rtol=1e-6)
    # level 2: one cell, sizes 256 and 512
    np.testing.assert_allclose(priors[33], [16 / 30, 16 / 20, 512 / 30, 512 / 20], rtol=1e-6)


def test_decode_prior_boxes_hand_example():
    prior = np.array([[0.5, 0.25, 0.2, 0.4]], np.float32)
    loc = np.array([[1.0, -2.0, 0.5, math.log(2.0) / 0.2]], np.float32)
    box = decode_prior_boxes(loc, prior)[0]
    # cx = 0.5 + 1 * 0.1 * 0.2 = 0.52; cy = 0.25 - 2 * 0.1 * 0.4 = 0.17
    # w = 0.2 * exp(0.5 * 0.2) = 0.2 * e^0.1; h = 0.4 * 2 = 0.8
    w = 0.2 * math.exp(0.1)
    np.testing.assert_allclose(box, [0.52 - w / 2, 0.17 - 0.4, 0.52 + w / 2, 0.17 + 0.4], rtol=1e-5)
    lm = decode_prior_landmarks(np.array([[1, 1, -1, 0, 0, 0, 2, 2, 0, -3]], np.float32), prior)[0]
    # x = 0.5 + d * 0.1 * 0.2, y = 0.25 + d * 0.1 * 0.4
    np.testing.assert_allclose(lm, [0.52, 0.29, 0.48, 0.25, 0.5, 0.25, 0.54, 0.33, 0.5, 0.13], rtol=1e-5)


def test_mxnet_anchors_hand_values():
    # base window (0, 0, 15, 15), centre 7.5; scale 2 -> side 32 -> [7.5 - 15.5, 7.5 + 15.5]
    assert generate_anchors(16, (1.0,), (2.0, 1.0)).tolist() == [[-8, -8, 23, 23], [0, 0, 15, 15]]
    assert generate_anchors(16, (1.0,), (32.0,)).tolist() == [[-248, -248, 263, 263]]
    # ratio 0.5: w = round(sqrt(256 / 0.5)) = 23, h = round(23 * 0.5) = 12 (numpy rounds half to even)
    assert generate_anchors(16, (0.5,), (1.0,)).tolist() == [[-3.5, 2.0, 18.5, 13.0]]
    plane = anchors_plane(2, 2, 8, np.array([[0, 0, 15, 15]], np.float32))
    assert plane.tolist() == [[0, 0, 15, 15], [8, 0, 23, 15], [0, 8, 15, 23], [8, 8, 23, 23]]


def test_bbox_and_landmark_pred_hand_values():
    anchors = np.array([[0, 0, 15, 15]], np.float32)  # w = h = 16, ctr 7.5
    box = bbox_pred(anchors, np.array([[0.5, -0.25, 0.0, math.log(2.0)]], np.float32))[0]
    # ctr_x = 0.5 * 16 + 7.5 = 15.5, ctr_y = -4 + 7.5 = 3.5, w = 16, h = 32
    np.testing.assert_allclose(box, [15.5 - 7.5, 3.5 - 15.5, 15.5 + 7.5, 3.5 + 15.5], rtol=1e-6)
    lm = landmark_pred(anchors, np.array([[[0, 0], [1, -1], [0.5, 0.5], [-1, 0], [0, 1]]], np.float32))[0]
    np.testing.assert_allclose(lm, [[7.5, 7.5], [23.5, -8.5], [15.5, 15.5], [-8.5, 7.5], [7.5, 23.5]])


def test_yunet_level_decode_hand_values():
    rows, cols, stride = 2, 3, 8
    cls = np.zeros((6, 1), np.float32)
    obj = np.zeros((6, 1), np.float32)
    cls[4], obj[4] = 0.81, 1.5  # cell r=1, c=1; obj clipped to 1 -> score sqrt(0.81) = 0.9
    cls[0], obj[0] = 0.25, 0.25  # score 0.25, below the threshold
    bbox = np.zeros((6, 4), np.float32)
    bbox[4] = [0.5, -0.5, math.log(4.0), 0.0]
    kps = np.zeros((6, 10), np.float32)
    kps[4] = [0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1]
    scores, boxes, points = decode_yunet_level(cls, obj, bbox, kps, stride, rows, cols, 0.5)
    assert scores.tolist() == pytest.approx([0.9])
    # cx = (1 + 0.5) * 8 = 12, cy = (1 - 0.5) * 8 = 4, w = 4 * 8 = 32, h = 8
    np.testing.assert_allclose(boxes, [[12 - 16, 4 - 4, 12 + 16, 4 + 4]])
    np.testing.assert_allclose(points[0], [[8, 8], [16, 8], [12, 12], [8, 16], [16, 16]])
