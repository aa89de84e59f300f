"""The open pack's default detector (MTCNN + MMOD): ground truth, keypoints, scale range, rotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import open_pack_or_skip
from facelab.detection.base import parse_rotations, unrotate_detections
from facelab.errors import ConfigError
from facelab.eval.detection_ap import detection_ap, read_dlib_xml
from facelab.io.image import load_image
from facelab.ops.boxes import iou_matrix
from facelab.pipeline import FaceAnalyzer
from facelab.structures import Detections
from shared_data import shared_file


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("facelab_home")
    open_pack_or_skip(home)
    return home


@pytest.fixture(scope="module")
def analyzer(home):
    return FaceAnalyzer(home=home, modules=["detection"])


@pytest.fixture(scope="module")
def detector(analyzer):
    return analyzer.detector


@pytest.fixture(scope="module")
def scrfd():
    from facelab.detection import create_detector

    return create_detector(shared_file("models/insightface/det_2.5g.onnx"))


def test_default_is_mtcnn_with_mmod(analyzer):
    from facelab.mtcnn.fused import MTCNNWithMMOD

    assert isinstance(analyzer.detector, MTCNNWithMMOD) and analyzer.detector.mmod is not None
    assert analyzer.cards["detection"].license == "MIT AND CC0-1.0"


def test_dlib_faces_ground_truth(detector):
    root = shared_file("data/detection/dlib_faces")
    gt = {Path(k).name: v for x in ("training.xml", "testing.xml") for k, v in read_dlib_xml(root / x).items()}
    names = sorted(gt)
    dets = dict(zip(names, detector.detect_batch([load_image(root / n) for n in names])))
    result = detection_ap(gt, {k: (d.boxes, d.scores) for k, d in dets.items()}, iou_thresh=0.5)
    assert result.n_gt == 43 and len(names) == 9
    assert result.tp == 43
    assert result.n_det - result.tp <= 2  # false positives over the 9 photos
    assert len(detector.detect(load_image(root / "dogs.jpg"))) == 0


def test_t1_six_faces_no_false_positive_with_keypoints(detector, scrfd):
    img = load_image(shared_file("data/images/t1.jpg"))
    got = detector.detect(img)
    ref = scrfd.detect(img)
    assert len(ref) == 6 and len(got) == 6  # the mtcnn package itself reports a 7th (a 14-px texture)
    assert (iou_matrix(got.boxes, ref.boxes).max(axis=1) >= 0.5).all()
    assert got.kps.shape == (6, 5, 2) and np.isfinite(got.kps).all()
    # ArcFace order: eyes above the nose above the mouth corners, left before right in the image
    k = got.kps
    assert (k[:, 0, 0] < k[:, 1, 0]).all() and (k[:, 3, 0] < k[:, 4, 0]).all()
    assert (np.maximum(k[:, 0, 1], k[:, 1, 1]) < np.minimum(k[:, 3, 1], k[:, 4, 1])).all()
    # ... and close to SCRFD's points (within a fifth of the inter-eye distance)
    match = iou_matrix(got.boxes, ref.boxes).argmax(axis=1)
    eye = np.linalg.norm(ref.kps[match, 0] - ref.kps[match, 1], axis=1)
    assert (np.linalg.norm(k - ref.kps[match], axis=2).max(axis=1) < 0.35 * eye).all()


def test_every_dlib_reference_face_is_found(detector):
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    entries = [e for e in meta["images"] if e["faces"]]
    found = detector.detect_batch([load_image(shared_file("data/" + e["image"])) for e in entries])
    total = 0
    for e, det in zip(entries, found):
        rects = ref[e["key"] + "_rects"] + [0, 0, 1, 1]
        assert len(det), e["image"]
        assert (iou_matrix(rects, det.boxes).max(axis=1) >= 0.3).all(), e["image"]
        total += len(rects)
    assert total == 31


def test_small_faces_and_a_close_up_selfie(detector, scrfd):
    import cv2

    t1 = load_image(shared_file("data/images/t1.jpg"))
    small = cv2.resize(t1, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)  # faces ~20-25 px
    got = detector.detect(small)
    want = scrfd.detect(t1).boxes * 0.25
    assert (iou_matrix(want, got.boxes).max(axis=1) >= 0.4).all()
    selfie = load_image(shared_file("data/verification/deepface/selfie-many-people.jpg"))
    got, ref = detector.detect(selfie), scrfd.detect(selfie)
    assert len(ref) == 6
    hits = iou_matrix(ref.boxes, got.boxes).max(axis=1) >= 0.4
    widest = int(np.argmax(ref.boxes[:, 2] - ref.boxes[:, 0]))  # the face cut by the right border
    assert hits[widest] and hits.sum() >= 5
    # a face filling the frame
    d1 = load_image(shared_file("data/images/inspireface/RD/d1.jpeg"))
    x1, y1, x2, y2 = scrfd.detect(d1).boxes[0].astype(int)
    crop = d1[max(0, y1 - 10) : y2 + 10, max(0, x1 - 10) : x2 + 10]
    assert len(detector.detect(crop)) == 1


def test_mmod_adds_faces_the_cascade_rejects_with_keypoints(home):
    mask = load_image(shared_file("data/images/inspireface/bulk/mask.png"))
    alone = FaceAnalyzer(home=home, modules=["detection"], det_options={"mmod": False})
    assert len(alone.detect(mask)) == 0
    fused = FaceAnalyzer(home=home, modules=["detection"]).detect(mask)
    assert len(fused) == 1 and fused.kps.shape == (1, 5, 2)
    box = fused.boxes[0]
    assert (fused.kps[0, :, 0] > box[0]).all() and (fused.kps[0, :, 0] < box[2]).all()


@pytest.mark.parametrize(
    ("upright", "turned", "k"),
    [
        ("bulk/r0.jpg", "bulk/r180.jpg", 2),
        ("rotate/rot_0.jpg", "rotate/rot_180.jpg", 2),
        ("rotate/rot_0.jpg", "rotate/rot_90.jpg", 3),
        ("bulk/r0.jpg", "bulk/r270.jpg", 1),
    ],
)
def test_rotated_photos_with_the_option_on(home, upright, turned, k):
    root = "data/images/inspireface/"
    up = load_image(shared_file(root + upright))
    img = load_image(shared_file(root + turned))
    assert img.shape == np.rot90(up, k).shape
    plain = FaceAnalyzer(home=home, modules=["detection"], det_options={"mmod": False})
    assert len(plain.detect(img)) == 0
    retry = FaceAnalyzer(home=home, modules=["detection"], det_options={"mmod": False, "rotations": "auto"})
    got = retry.detect(img)
    assert len(got) == 1
    # The box and points are in the turned photo's frame: the upright photo's, turned the same way.
    want = plain.detect(up)
    h, w = up.shape[:2]
    pts = want.kps[0]
    turned_pts = {1: np.stack([pts[:, 1], w - pts[:, 0]], 1), 2: np.stack([w - pts[:, 0], h - pts[:, 1]], 1)}
    turned_pts[3] = np.stack([h - pts[:, 1], pts[:, 0]], 1)
    expect = turned_pts[k]
    assert np.abs(got.kps[0] - expect).max() < 0.12 * (want.boxes[0, 2] - want.boxes[0, 0])
    x1, y1 = expect.min(axis=0)
    x2, y2 = expect.max(axis=0)
    b = got.boxes[0]
    assert b[0] < x1 and b[1] < y1 and b[2] > x2 and b[3] > y2  # the box holds the points


def test_rotation_helpers():
    assert parse_rotations("auto") == (3, 2, 1) and parse_rotations("none") == () and parse_rotations(True)
    assert parse_rotations([270, 90]) == (1, 3)
    with pytest.raises(ConfigError):
        parse_rotations("sideways")
    with pytest.raises(ConfigError):
        parse_rotations([45])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 60, 3), np.uint8)
    pts = np.array([[[10.5, 20.5]] * 5], np.float32)
    for k in range(4):
        turned = np.rot90(img, k)
        # a point on pixel (row, col) of the turned image maps onto the same pixel value
        r, c = 7, 11
        det = Detections(np.array([[c, r, c + 1, r + 1]]), np.ones(1), np.array([[[c + 0.5, r + 0.5]] * 5]))
        back = unrotate_detections(det, k, img.shape)
        x, y = back.kps[0, 0]
        assert turned[r, c].tolist() == img[int(y), int(x)].tolist()
        bx = back.boxes[0]
        assert bx[2] - bx[0] == pytest.approx(1) and bx[3] - bx[1] == pytest.approx(1)
    assert len(unrotate_detections(Detections(np.zeros((0, 4)), np.zeros(0), pts[:0]), 1, img.shape)) == 0
