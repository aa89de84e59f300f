"""The numpy shape-predictor evaluator against dlib 20.0.1's own 5-point shapes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from facelab.convert.dlib_reader import bundled_model_path
from facelab.dlib.shape_predictor import load_shape_predictor, predict, predict_many
from facelab.errors import ConfigError, ImageError, ModelNotFoundError
from facelab.io.image import load_image
from shared_data import shared_file


@pytest.fixture(scope="module")
def model():
    try:
        path = bundled_model_path("shape_predictor_5_face_landmarks.dat")
    except ModelNotFoundError as exc:  # the data package (an install extra) is missing
        if os.environ.get("FACELAB_REQUIRE_FIXTURES") == "1":
            raise
        pytest.skip(f"face-recognition-models not installed: {exc}")
    return load_shape_predictor(path)


def _reference():
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    return ref, [e for e in meta["images"] if e["faces"] > 0]


def test_shapes_match_dlib_within_one_pixel(model):
    ref, entries = _reference()
    n = 0
    for e in entries:
        image = load_image(shared_file("data/" + e["image"]))
        rects = ref[e["key"] + "_rects"]
        want = ref[e["key"] + "_shapes"].astype(np.float64)
        raw = predict_many(model, image, rects)
        rounded = predict_many(model, image, rects, round_points=True)
        assert raw.shape == (len(rects), 5, 2) and raw.dtype == np.float32
        assert np.abs(raw - want).max() <= 1.0, e["key"]
        # dlib rounds its parts to integer pixels: ours, rounded the same way, are identical.
        assert np.array_equal(rounded, want), e["key"]
        n += len(rects)
    assert n == 31


def test_single_face_grey_and_colour_agree(model):
    ref, entries = _reference()
    e = entries[0]
    image = load_image(shared_file("data/" + e["image"]))
    rect = ref[e["key"] + "_rects"][0]
    grey = (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
    a = predict(model, image, rect)
    b = predict(model, grey, tuple(float(v) for v in rect))
    c = predict(model, np.ascontiguousarray(image[..., ::-1]), rect)
    assert a.shape == (5, 2)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_rect_outside_image_still_returns_points(model):
    image = np.full((50, 60, 3), 128, np.uint8)
    out = predict(model, image, (-100, -100, -20, -20))
    assert out.shape == (5, 2) and np.isfinite(out).all()
    assert (out < 0).all()  # the landmarks stay inside the given (off-image) rectangle


def test_empty_and_bad_inputs(model):
    assert predict_many(model, np.zeros((10, 10), np.uint8), np.zeros((0, 4))).shape == (0, 5, 2)
    with pytest.raises(ImageError):
        predict(model, np.zeros((10, 10, 3), np.float32), (0, 0, 5, 5))
    with pytest.raises(ConfigError):
        predict_many(model, np.zeros((10, 10), np.uint8), np.zeros((3, 3)))
