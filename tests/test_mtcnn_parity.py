"""MTCNN from the PyPI weights: conversion, cache and card, and parity with the package's own outputs.

``reference/mtcnn_reference.json`` holds ``mtcnn==1.0.0``'s results (TensorFlow CPU, defaults) on
34 shared photos, boxes and points rounded to integers by the package. Ours must give the same
faces: rounded boxes and points within 1 px, confidences within 1e-3.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from facelab.errors import ModelError, ModelNotFoundError
from facelab.io.image import load_image
from shared_data import missing_dependency, shared_file

_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # = facelab.FaceKeypoint order
#: A quick subset: a group photo, a selfie, a PASCAL photo, and the two photos without a face.
_QUICK = {"t1.jpg", "selfie-many-people.jpg", "2008_002079.jpg", "dogs.jpg", "view.jpg"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("mtcnn_home")


@pytest.fixture(scope="module")
def mtcnn(home):
    from facelab.mtcnn import create_mtcnn

    try:
        return create_mtcnn(home=home)
    except ModelNotFoundError as exc:
        missing_dependency(str(exc))


def _reference():
    return json.loads(shared_file("data/reference/mtcnn_reference.json").read_text())["images"]


def _as_package_output(det, shape):
    """The package's post-processing: boxes clipped to [0, W-1] x [0, H-1], [x, y, w, h], rounded."""
    h, w = shape[:2]
    b = det.boxes.astype(np.float64).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w - 1)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h - 1)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    return np.round(xywh), np.round(det.kps.astype(np.float64))


def _check(mtcnn, entry):
    img = load_image(shared_file(entry["image"]))
    assert list(img.shape) == entry["shape"]
    det = mtcnn.detect(img)
    name = entry["image"]
    assert len(det) == len(entry["faces"]), (name, det.scores, [f["confidence"] for f in entry["faces"]])
    if not entry["faces"]:
        return
    boxes, kps = _as_package_output(det, img.shape)
    want_boxes = np.array([f["box"] for f in entry["faces"]])
    want_kps = np.array([[f["keypoints"][n] for n in _NAMES] for f in entry["faces"]])
    want_conf = np.array([f["confidence"] for f in entry["faces"]])
    assert np.abs(boxes - want_boxes).max() <= 1, name
    assert np.abs(kps - want_kps).max() <= 1, name
    assert np.abs(det.scores - want_conf).max() <= 1e-3, name


def _entries(quick: bool):
    return [e for e in _reference() if (e["image"].rsplit("/", 1)[-1] in _QUICK) == quick]


def test_parity_on_the_quick_subset(mtcnn):
    entries = _entries(True)
    assert len(entries) == len(_QUICK)
    for entry in entries:
        _check(mtcnn, entry)


@pytest.mark.slow
def test_parity_on_every_reference_photo(mtcnn):
    entries = _entries(False)
    assert len(entries) == 29
    for entry in entries:
        _check(mtcnn, entry)


def test_batches_give_the_one_by_one_results(mtcnn):
    import cv2

    t1 = load_image(shared_file("data/images/t1.jpg"))
    selfie = load_image(shared_file("data/verification/deepface/selfie-many-people.jpg"))
    small = cv2.resize(t1, (640, 443), interpolation=cv2.INTER_AREA)
    flipped = np.ascontiguousarray(t1[:, ::-1])  # same size as t1: its levels share P-Net runs with it
    images = [t1, selfie, flipped, small, np.zeros((30, 30, 3), np.uint8)]
    calls = []
    run = mtcnn.session.run
    mtcnn.session.run = lambda *a, **k: calls.append(a[0]["input"].shape) or run(*a, **k)
    try:
        batch = mtcnn.detect_batch(images)
    finally:
        mtcnn.session.run = run
    stacked = [s for s in calls if s[0] == 2]
    assert len(stacked) == 12  # every pyramid level of t1 and its mirror image: one run for both
    for img, got in zip(images, batch):
        one = mtcnn.detect(img)
        assert len(one) == len(got)
        np.testing.assert_allclose(got.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(got.kps, one.kps, atol=1e-3)
        np.testing.assert_allclose(got.scores, one.scores, atol=1e-6)
    assert len(batch[4]) == 0 and batch[4].kps.shape == (0, 5, 2)


def test_conversion_is_cached_with_its_card(mtcnn, home):
    from facelab.mtcnn.convert import CONVERTER_VERSION, convert_cached, weights_path

    files = convert_cached(home)
    for network, path in zip(("pnet", "rnet", "onet"), files.paths()):
        card = json.loads(path.with_suffix(".json").read_text())
        extra = card["extra"]
        assert card["license"] == "MIT"
        assert extra["source_package"] == "mtcnn==1.0.0" and extra["converter_version"] == CONVERTER_VERSION
        assert extra["source_sha256"] == hashlib.sha256(weights_path(network).read_bytes()).hexdigest()
        assert card["files"][0]["size_bytes"] == path.stat().st_size
    mtimes = [p.stat().st_mtime_ns for p in files.paths()]
    assert [p.stat().st_mtime_ns for p in convert_cached(home).paths()] == mtimes  # reused, not rebuilt


def test_corrupt_or_wrong_weight_files_are_clear_errors(tmp_path):
    from facelab.mtcnn.convert import convert_cached, weights_path

    try:
        sources = {n: weights_path(n) for n in ("pnet", "rnet", "onet")}
    except ModelNotFoundError as exc:
        missing_dependency(str(exc))
    bad = tmp_path / "pnet.lz4"
    bad.write_bytes(sources["pnet"].read_bytes()[:1000])
    with pytest.raises(ModelError, match="pnet.lz4: corrupt"):
        convert_cached(tmp_path / "h1", {**sources, "pnet": bad})
    with pytest.raises(ModelError, match="MTCNN's pnet has 13"):
        convert_cached(tmp_path / "h2", {**sources, "pnet": sources["rnet"]})  # R-Net's list is not P-Net's
    with pytest.raises(ModelNotFoundError):
        convert_cached(tmp_path / "h3", {**sources, "onet": tmp_path / "missing.lz4"})
