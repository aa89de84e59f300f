"""The MMOD detector on ONNX Runtime against dlib 20.0.1's own detections (reference outputs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from facelab.dlib import pack
from facelab.dlib.mmod import DLIB_MODE, FAST_MODE, DlibMMOD, MMODMode
from facelab.errors import ConfigError, ModelNotFoundError
from facelab.io.image import load_image
from shared_data import shared_file

# dlib mode upsamples 2x first: the small reference images keep this test to a few seconds; the
# benchmark (benchmarks/bench_open_pack.py) runs all 20.
DLIB_MODE_KEYS = ("img006", "img007", "img008", "img009", "img014", "img015", "img016", "img017", "img018", "img019")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    try:
        return pack.open_detector(home=tmp_path_factory.mktemp("facelab_home"))
    except ModelNotFoundError as exc:  # the face-recognition-models data package is missing
        if os.environ.get("FACELAB_REQUIRE_FIXTURES") == "1":
            raise
        pytest.skip(str(exc))


def _reference():
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    return ref, meta["images"]


def _iou(a, b):
    """IoU of inclusive integer rectangles."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.slow
def test_dlib_mode_matches_dlib(detector):
    det = detector.with_mode(DLIB_MODE)
    ref, images = _reference()
    checked = 0
    for e in images:
        if e["key"] not in DLIB_MODE_KEYS:
            continue
        rects, scores = det.detect_rects(load_image(shared_file("data/" + e["image"])))
        want = ref[e["key"] + "_rects"]
        conf = ref[e["key"] + "_conf"]
        assert len(rects) == len(want), e["key"]
        for r, s in zip(rects, scores):
            ious = [_iou(r, w) for w in want]
            j = int(np.argmax(ious))
            assert ious[j] >= 0.95, (e["key"], r, want[j])
            assert abs(float(s) - float(conf[j])) < 0.01, (e["key"], s, conf[j])
            checked += 1
    assert checked == 17


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "faster"])
def test_fast_modes_find_every_face_dlib_found(detector, mode):
    if mode == "fast":
        assert detector.mode == FAST_MODE  # the default
    detector = detector.with_mode(mode)
    ref, images = _reference()
    found = 0
    for e in images:
        image = load_image(shared_file("data/" + e["image"]))
        dets = detector.detect(image)
        assert dets.kps is None and dets.boxes.dtype == np.float32
        rects = np.asarray(dets.boxes, np.float64) - [0, 0, 1, 1]  # back to dlib's inclusive rectangles
        for w in ref[e["key"] + "_rects"]:
            best = max((_iou(w, r) for r in rects), default=0.0)
            assert best >= 0.5, (e["key"], w.tolist(), rects.tolist())
            found += 1
        if e["faces"] == 0:
            assert len(dets) == 0, e["key"]
    assert found == 31


def test_detect_api_and_modes(detector):
    image = load_image(shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg"))
    dets = detector.detect(image)
    assert len(dets) == 1 and dets.scores[0] > 0.5
    # A higher adjust_threshold than every score finds nothing.
    strict = DlibMMOD(detector.session, geometry=detector.geometry, det_thresh=5.0)
    assert len(strict.detect(image)) == 0
    # The 250x250 photo is upsampled 2x (fast mode caps the scale at 2), so its ~100 px face is
    # ~200 px wide: with max_levels=1 only the full-resolution scale (80 px window) is searched
    # and the face is not found.
    narrow = detector.with_mode(MMODMode(max_levels=1))
    assert len(narrow.detect(image)) == 0
    assert detector.with_mode("dlib").mode == DLIB_MODE
    with pytest.raises(ConfigError):
        detector.with_mode("nonsense")


def test_blank_and_tiny_images_have_no_face(detector):
    assert len(detector.detect(np.full((200, 300, 3), 127, np.uint8))) == 0
    for mode in ("fast", "dlib"):
        assert len(detector.with_mode(mode).detect(np.full((3, 2, 3), 127, np.uint8))) == 0
