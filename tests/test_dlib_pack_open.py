"""The ``open`` pack: cards, offline build, runners, and end-to-end verification on master.csv."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from cli_helpers import open_pack_or_skip
from facelab.dlib import pack
from facelab.errors import ConfigError
from facelab.io.image import load_image
from facelab.registry import RUNNERS
from facelab.structures import Detections
from shared_data import shared_file


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("facelab_home")


@pytest.fixture(scope="module")
def built(home):
    return open_pack_or_skip(home)


@pytest.fixture(scope="module")
def recognizer(built, home):
    return pack.open_recognizer(home=home)


def _reference():
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    return ref, [e for e in meta["images"] if e["faces"] > 0]


def test_pack_card_is_registered_mit_and_cc0_with_three_models():
    from facelab.zoo import get_pack, list_packs, pack_problems

    assert "open" in list_packs()
    card = get_pack("open")
    assert card.license == "MIT AND CC0-1.0"  # MTCNN (MIT) + dlib's models (CC0)
    assert [m.task for m in card.models] == ["detection", "landmark_5", "recognition"]
    assert [m.arch for m in card.models] == ["mtcnn_mmod", "dlib_shape_5", "dlib_resnet"]
    assert [f.filename for f in card.model("detection").files] == [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "mmod_human_face_detector.onnx",
    ]
    assert pack_problems(card) == []
    rec = card.model("recognition")
    assert rec.embedding_dim == 128 and rec.input_size == (150, 150)
    assert 0.9 < rec.extra["threshold_cosine"] < 0.95
    assert rec.extra["threshold_euclidean_dlib"] == 0.6
    assert "master.csv" in rec.extra["threshold_calibration"]["dataset"]
    assert all("Davis" in m.notes for m in card.models[1:])
    assert "mtcnn==1.0.0" in card.model("detection").notes


def test_runners_are_registered():
    from facelab.detection import DETECTORS
    from facelab.mtcnn.fused import MTCNNWithMMOD

    assert DETECTORS.get("dlib_mmod") is pack.DlibMMOD
    assert DETECTORS.get("mtcnn_mmod") is MTCNNWithMMOD
    assert RUNNERS.get("landmark_5") is pack.DlibLandmark5
    assert RUNNERS.get("recognition.dlib_resnet") is pack.DlibResNetRecognizer


def test_build_is_offline_and_cached(built, home):
    from facelab.zoo import resolve_pack

    assert [c.task for c, _ in built.models] == ["detection", "landmark_5", "recognition"]
    for card, path in built.models:
        assert path.is_file() and path.parent == home / "models" / "open"
        for spec in card.files:  # the detector has four files (MTCNN's three networks and MMOD)
            file = path.with_name(spec.filename)
            assert spec.size_bytes == file.stat().st_size
            assert spec.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    mtimes = [p.stat().st_mtime_ns for _, p in built.models]
    again = pack.build_open_pack(home)
    assert [p.stat().st_mtime_ns for _, p in again.models] == mtimes
    # The zoo finds the built pack without downloading anything.
    resolved = resolve_pack("open", home=home, download=False)
    assert [p.name for _, p in resolved.models] == [p.name for _, p in built.models]


def test_descriptors_from_images_match_dlib(recognizer):
    ref, entries = _reference()
    images, dets, want = [], [], []
    for e in entries:
        images.append(load_image(shared_file("data/" + e["image"])))
        rects = ref[e["key"] + "_rects"]
        # dlib rectangles -> facelab boxes (x2 = right + 1); no keypoints needed.
        dets.append(Detections(rects + [0, 0, 1, 1], ref[e["key"] + "_conf"], None))
        want.append(ref[e["key"] + "_desc"])
    out = recognizer.embed_detections(images, dets)
    assert [len(o) for o in out] == [len(w) for w in want]
    got = np.concatenate(out)
    expect = np.concatenate(want)
    assert got.dtype == np.float32 and got.shape == (31, 128)
    cos = (got * expect).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expect, axis=1)
    assert cos.min() >= 0.9999
    assert np.abs(got - expect).max() <= 1e-4


def test_recognizer_reuses_the_landmark_runners_shapes(recognizer, built, home):
    """Shapes from the pipeline's landmark_5 step are used as given, not predicted again."""
    ref, entries = _reference()
    e = entries[0]
    image = load_image(shared_file("data/" + e["image"]))
    det = Detections(ref[e["key"] + "_rects"] + [0, 0, 1, 1], ref[e["key"] + "_conf"], None)
    landmarker = pack.open_landmarker(home=home)
    values = landmarker.predict_detections([image], [det])
    (plain,) = recognizer.embed_detections([image], [det])
    (reused,) = recognizer.embed_detections([image], [det], values)
    np.testing.assert_array_equal(reused, plain)
    # dlib's own reference shapes give dlib's own descriptors through the reuse path ...
    given = [{"dlib_shape_5": list(ref[e["key"] + "_shapes"].astype(np.float32))}]
    (from_ref,) = recognizer.embed_detections([image], [det], given)
    np.testing.assert_allclose(from_ref, ref[e["key"] + "_desc"], atol=1e-4)
    # ... and shifted shapes change the descriptors, so they really are the ones used.
    shifted = [{"dlib_shape_5": [s + 6.0 for s in values[0]["dlib_shape_5"]]}]
    (moved,) = recognizer.embed_detections([image], [det], shifted)
    assert np.abs(moved - plain).max() > 1e-3


def test_recognizer_handles_empty_and_mismatched_inputs(recognizer):
    img = np.zeros((50, 50, 3), np.uint8)
    out = recognizer.embed_detections([img, img], [Detections.empty(with_kps=False), Detections.empty()])
    assert [o.shape for o in out] == [(0, 128), (0, 128)]
    with pytest.raises(ConfigError):
        recognizer.embed_detections([img], [])
    with pytest.raises(ConfigError):
        recognizer.embed(np.zeros((2, 112, 112, 3), np.uint8))


def test_landmark_runner_reports_dlib_points(built, home):
    lm = pack.open_landmarker(home=home)
    ref, entries = _reference()
    e = entries[0]
    image = load_image(shared_file("data/" + e["image"]))
    rects = ref[e["key"] + "_rects"]
    det = Detections(rects + [0, 0, 1, 1], ref[e["key"] + "_conf"])
    (values,) = lm.predict_detections([image], [det])
    shapes = np.stack(values["dlib_shape_5"])
    assert np.array_equal(shapes, ref[e["key"] + "_shapes"].astype(np.float32))
    derived = np.stack(values["eyes_nose_from_dlib"])
    assert derived.shape == (len(rects), 3, 2) and np.isfinite(derived).all()
    assert np.allclose(derived[:, 0], (shapes[:, 2] + shapes[:, 3]) / 2)  # eye on the image left
    with pytest.raises(ConfigError):
        lm.predict_detections([image], [])


def test_dlib5_to_facelab_order():
    shape = np.array([[140, 100], [120, 102], [60, 100], [80, 102], [100, 150]], np.float32)
    kps = pack.dlib5_to_facelab(shape)
    assert kps[0].tolist() == [70, 101]  # eye on the image left
    assert kps[1].tolist() == [130, 101]  # eye on the image right
    assert kps[2].tolist() == [100, 150]  # nose base
    assert np.isnan(kps[3:]).all()
    assert pack.dlib5_to_facelab(shape[None]).shape == (1, 5, 2)
    with pytest.raises(ConfigError):
        pack.dlib5_to_facelab(np.zeros((68, 2)))


@pytest.mark.slow
def test_master_csv_accuracy_at_documented_threshold(built, home):
    root = shared_file("data/verification/deepface")
    with open(root / "master.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    det = pack.open_face_detector(home=home)  # the pack's default detector (MTCNN + MMOD), as calibrated
    recognizer = pack.open_recognizer(home=home)
    recognizer.use_detector(det.arch)  # MTCNN-like boxes reach the shape predictor through MTCNN_TO_DLIB
    names = sorted({p["file_x"] for p in pairs} | {p["file_y"] for p in pairs})
    images = [load_image(root / n) for n in names]
    dets = [det.detect(img) for img in images]
    largest = []
    for d in dets:
        assert len(d) >= 1
        areas = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
        largest.append(d.select([int(np.argmax(areas))]))
    emb = {n: e[0] for n, e in zip(names, recognizer.embed_detections(images, largest))}
    threshold = recognizer.card.extra["threshold_cosine"]
    same = np.array([p["Decision"] == "Yes" for p in pairs])
    a = np.stack([emb[p["file_x"]] for p in pairs])
    b = np.stack([emb[p["file_y"]] for p in pairs])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    accuracy = float(((cos >= threshold) == same).mean())
    assert accuracy >= 0.99
    # dlib's own rule on the same descriptors.
    assert float(((np.linalg.norm(a - b, axis=1) < 0.6) == same).mean()) >= 0.99
