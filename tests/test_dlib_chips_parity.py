"""Chip extraction parity with dlib 20.0.1's own ``get_face_chip`` outputs (31 reference faces)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.dlib.chips import (
    ChipDetails,
    chip_to_image_matrix,
    extract_chip,
    extract_chips,
    face_chip_details,
    pyramid_down2,
)
from facelab.errors import ConfigError, ImageError
from facelab.io.image import load_image
from shared_data import shared_file


def _reference():
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    return ref, [e for e in meta["images"] if e["faces"] > 0]


def test_chips_match_dlib_within_one_grey_level():
    ref, entries = _reference()
    n = 0
    for e in entries:
        image = load_image(shared_file("data/" + e["image"]))  # BGR
        shapes = ref[e["key"] + "_shapes"]
        chips = extract_chips(image, [face_chip_details(s, 150, 0.25) for s in shapes])
        for shape, chip, want in zip(shapes, chips, ref[e["key"] + "_chips"]):
            # dlib's chips are RGB (it was handed RGB); ours keep the input's BGR order.
            diff = np.abs(chip[..., ::-1].astype(np.int32) - want.astype(np.int32))
            assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
            assert diff.mean() <= 1.0, (e["key"], diff.mean())
            single = extract_chip(image, face_chip_details(shape))
            assert np.array_equal(single, chip)
            n += 1
    assert n == 31


def test_chip_colour_order_is_kept():
    ref, entries = _reference()
    e = entries[0]
    image = load_image(shared_file("data/" + e["image"]))
    shape = ref[e["key"] + "_shapes"][0]
    want = ref[e["key"] + "_chips"][0].astype(np.int32)
    bgr = extract_chip(image, face_chip_details(shape)).astype(np.int32)
    # The same chip read in the wrong order is far off (the colour order is not a no-op here).
    assert np.abs(bgr[..., ::-1] - want).mean() < np.abs(bgr - want).mean() - 5


def test_chip_matrix_maps_template_points_onto_the_shape():
    shape = np.array([[300.0, 200.0], [260.0, 203.0], [150.0, 198.0], [190.0, 202.0], [226.0, 290.0]])
    d = face_chip_details(shape, 150, 0.25)
    m = chip_to_image_matrix(d)
    # Chip centre maps to the image of the chip centre; the eye line stays almost horizontal.
    assert abs(d.angle) < 0.05
    centre = m @ np.array([74.5, 74.5, 1.0])
    assert np.allclose(centre, (d.rect[:2] + d.rect[2:]) / 2, atol=1e-6)
    # Scale: the chip spans the rectangle side.
    assert np.isclose(np.hypot(*m[:, 0]) * 149, d.rect[2] - d.rect[0], rtol=1e-9)


def test_pyramid_down2_filter_and_size():
    img = np.zeros((21, 31), np.uint8)
    img[10, 14] = 255
    out = pyramid_down2(img)
    assert out.shape == ((21 - 3) // 2, (31 - 3) // 2)
    # Output (r, c) is centred on input (2r + 2, 2c + 2): the impulse at (10, 14) lands on (4, 6)
    # with weight 6 * 6 / 256 of 255, floored; its output neighbours sit two input pixels away
    # (tap weight 1).
    assert out[4, 6] == (255 * 36) // 256
    assert out[4, 5] == (255 * 6 * 1) // 256 and out[3, 6] == (255 * 6 * 1) // 256
    assert out[4, 4] == 0
    assert pyramid_down2(np.zeros((8, 50), np.uint8)).size == 0


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        face_chip_details(np.zeros((68, 2)))
    with pytest.raises(ConfigError):
        face_chip_details(np.zeros((5, 2)), padding=-1)
    with pytest.raises(ImageError):
        extract_chip(np.zeros((10, 10, 3), np.float32), ChipDetails(np.array([0.0, 0, 9, 9]), 0.0, 5, 5))


def test_unscaled_unrotated_chip_is_a_copy_with_black_border():
    img = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
    d = ChipDetails(np.array([-2.0, 3.0, 7.0, 12.0]), 0.0, 10, 10)
    chip = extract_chip(img, d)
    assert np.array_equal(chip[:, 2:], img[3:13, 0:8])
    assert not chip[:, :2].any()
