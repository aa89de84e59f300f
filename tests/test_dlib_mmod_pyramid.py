"""dlib's pyramid geometry and MMOD post-processing (no network needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelab.dlib.mmod import (
    DLIB_MODE,
    FAST_MODE,
    MMODGeometry,
    MMODMode,
    boxes_from_dlib_rects,
    decode_mmod,
    dlib_rects_from_boxes,
    mmod_nms,
)
from facelab.dlib.pyramid import (
    build_tiled_pyramid,
    point_up,
    pyramid_level_sizes,
    pyramid_up2,
    rect_down2,
    resize_align_corners,
    tiled_pyramid_layout,
    tiled_to_image,
)
from facelab.errors import ConfigError, ImageError


def test_level_sizes_follow_five_sixths_and_stop_below_five_rows():
    sizes = pyramid_level_sizes(100, 120)
    assert sizes[:4] == [(100, 120), (83, 100), (69, 83), (57, 69)]
    assert sizes[-1][0] >= 5 and math.floor(sizes[-1][0] * 5 / 6) < 5
    assert pyramid_level_sizes(100, 120, max_levels=3) == sizes[:3]


@pytest.mark.parametrize("shape", [(100, 120), (332, 500), (886, 1280), (250, 250), (1300, 1000)])
def test_tiled_layout_invariants(shape):
    h, w = shape
    lay = tiled_pyramid_layout(h, w)
    sizes = pyramid_level_sizes(h, w)
    rects = lay.rects
    assert len(rects) >= 2 and len(rects) <= len(sizes)
    # First tile: the image itself at the outer padding; every tile has its level's size.
    assert rects[0].tolist() == [11, 11, 11 + w - 1, 11 + h - 1]
    for (left, top, right, bottom), (nr, nc) in zip(rects, sizes):
        assert (bottom - top + 1, right - left + 1) == (nr, nc)
        assert left >= 0 and top >= 0 and right < lay.width and bottom < lay.height
    assert lay.width == w + 22
    # No two tiles overlap, and tiles keep at least the 10-pixel gap in the first column.
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
    first_col = [r for r in rects if r[0] == 11]
    for a, b in zip(first_col, first_col[1:]):
        assert b[1] - a[3] - 1 == 10


def test_tiled_pyramid_fills_tiles_and_leaves_gaps_zero():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 60, 80)).astype(np.float32)
    lay = tiled_pyramid_layout(60, 80)
    tiled = build_tiled_pyramid(img, lay)
    assert tiled.shape == (3, lay.height, lay.width)
    left, top, right, bottom = lay.rects[0]
    assert np.array_equal(tiled[:, top : bottom + 1, left : right + 1], img)
    mask = np.zeros(tiled.shape[1:], bool)
    for left, top, right, bottom in lay.rects:
        mask[top : bottom + 1, left : right + 1] = True
    assert not tiled[:, ~mask].any()
    # Level 1's corners are the corner pixels of level 0 (align-corners resize).
    l1 = lay.rects[1]
    assert np.allclose(tiled[:, l1[1], l1[0]], img[:, 0, 0])
    assert np.allclose(tiled[:, l1[3], l1[2]], img[:, -1, -1])
    fast = build_tiled_pyramid(img, lay, exact=False)
    l0 = lay.rects[0]
    assert fast.shape == tiled.shape and np.array_equal(fast[:, l0[1] : l0[3] + 1, l0[0] : l0[2] + 1], img)
    assert not fast[:, ~mask].any()


def test_resize_align_corners_is_linear_on_a_ramp():
    ramp = np.tile(np.arange(11, dtype=np.float32), (1, 4, 1))  # (1, 4, 11): value = x
    out = resize_align_corners(ramp, 4, 6)
    assert np.allclose(out[0, 0], np.linspace(0, 10, 6))


def test_point_mapping_formulas():
    # dlib: pyramid_down<6>::point_up(p) = p * 6/5 + 0.3 per level; pyramid_down<2>::rect_down = p/2 - (1.25, 0.75).
    assert np.allclose(point_up(np.array([10.0, 20.0]), 1), [12.3, 24.3])
    assert np.allclose(point_up(np.array([10.0, 20.0]), 2), [12.3 * 1.2 + 0.3, 24.3 * 1.2 + 0.3])
    assert np.allclose(rect_down2(np.array([[10.0, 10.0, 30.0, 30.0]])), [[3.75, 4.25, 13.75, 14.25]])
    lay = tiled_pyramid_layout(100, 120)
    # A rectangle inside level 0's tile maps back by subtracting the tile origin only.
    r = np.array([[21.0, 31.0, 60.0, 70.0]])
    assert np.allclose(tiled_to_image(lay, r), r - 11)
    # One inside level 1's tile maps up one level.
    l1 = lay.rects[1].astype(float)
    r1 = np.array([[l1[0] + 5, l1[1] + 6, l1[0] + 25, l1[1] + 26]])
    want = np.concatenate([point_up(np.array([5.0, 6.0]), 1), point_up(np.array([25.0, 26.0]), 1)])
    assert np.allclose(tiled_to_image(lay, r1)[0], want)


def test_pyramid_up2_size_and_corners():
    img = (np.arange(5 * 7 * 3) % 251).astype(np.uint8).reshape(5, 7, 3)
    up = pyramid_up2(img)
    assert up.shape == (11, 16, 3) and up.dtype == np.uint8
    assert np.array_equal(up[0, 0], img[0, 0]) and np.array_equal(up[-1, -1], img[-1, -1])
    with pytest.raises(ImageError):
        pyramid_up2(np.zeros((4, 4), np.float32))


def test_nms_uses_dlibs_bounding_box_union():
    a = [0, 0, 9, 9]
    b = [5, 5, 14, 14]  # intersection 25 px; true union 175 (IoU 0.143); bounding box 225 (0.111)
    rects = np.array([a, b], float)
    scores = np.array([2.0, 1.0])
    assert mmod_nms(rects, scores, iou=0.12).tolist() == [0, 1]  # 0.111 <= 0.12: both kept
    assert mmod_nms(rects, scores, iou=0.10).tolist() == [0]
    # Coverage rule: a box inside another is suppressed when covered > threshold.
    inner = np.array([[0, 0, 19, 19], [5, 5, 9, 9]], float)
    assert mmod_nms(inner, np.array([1.0, 2.0]), iou=0.9, covered=0.99).tolist() == [1]
    assert mmod_nms(inner, np.array([1.0, 2.0]), iou=0.9, covered=1.0).tolist() == [1, 0]


def test_decode_maps_output_cells_to_windows():
    geom = MMODGeometry()
    lay = tiled_pyramid_layout(200, 200)
    scores = np.full((1, 40, 40), -1.0, np.float32)
    scores[0, 3, 4] = 0.8  # input point (8*4 + 14, 8*3 + 14) = (46, 38) in the tiled image
    rects, sc = decode_mmod(scores, geom, lay)
    assert sc.tolist() == pytest.approx([0.8])
    # 80x80 window centred there spans +-39.5: [6.5, -1.5, 85.5, 77.5]; minus the 11-pixel outer
    # padding (level 0): [-4.5, -12.5, 74.5, 66.5]; C lround (halves away from zero).
    assert rects.tolist() == [[-5.0, -13.0, 75.0, 67.0]]
    assert len(decode_mmod(scores, geom, lay, adjust_threshold=0.9)[0]) == 0


def test_box_conversions_round_trip():
    rects = np.array([[10, 20, 109, 119]])
    boxes = boxes_from_dlib_rects(rects)
    assert boxes.tolist() == [[10, 20, 110, 120]]
    assert dlib_rects_from_boxes(boxes).tolist() == rects.tolist()


def test_modes():
    assert DLIB_MODE.upsample == 1 and DLIB_MODE.exact
    assert FAST_MODE.upsample == "auto" and FAST_MODE.max_side == 1024
    with pytest.raises(ConfigError):
        MMODMode(upsample="twice")
    with pytest.raises(ConfigError):
        MMODMode(min_face=0)
    geom = MMODGeometry()
    assert MMODGeometry.from_dict(geom.to_dict()) == geom
