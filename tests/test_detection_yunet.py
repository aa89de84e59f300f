"""YuNet on the real OpenCV Zoo file: faces on t1.jpg and parity with OpenCV's FaceDetectorYN."""

from __future__ import annotations

import cv2
import numpy as np

import shared_data
from facelab.detection import YuNet, create_detector
from facelab.detection.yunet import pad_to_multiple
from facelab.io.image import load_image

IMAGES = (
    "data/images/t1.jpg",
    "data/detection/dlib_faces/2007_007763.jpg",
    "data/detection/dlib_faces/2008_004176.jpg",
    "data/detection/dlib_faces/dogs.jpg",
    "data/verification/deepface/img10.jpg",
    "data/images/inspireface/bulk/view.jpg",
)


def _model() -> str:
    return str(shared_data.shared_file("models/yunet/face_detection_yunet_2026may.onnx"))


def _opencv(model: str, img: np.ndarray, score=0.9, nms=0.3, top_k=5000) -> np.ndarray:
    height, width = img.shape[:2]
    detector = cv2.FaceDetectorYN.create(model, "", (width, height), score, nms, top_k)
    _, faces = detector.detect(img)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def test_yunet_finds_the_six_faces_of_t1():
    det = create_detector(_model())
    assert isinstance(det, YuNet)
    result = det.detect(shared_data.shared_file("data/images/t1.jpg"))
    assert len(result) == 6
    assert (result.scores >= 0.9).all()
    # The same six people as SCRFD finds (IoU >= 0.5 each); SCRFD is checked against InsightFace elsewhere.
    scrfd = create_detector(str(shared_data.shared_file("models/insightface/det_2.5g.onnx"))).detect(
        shared_data.shared_file("data/images/t1.jpg")
    )
    from facelab.ops.boxes import iou_matrix

    assert (iou_matrix(result.boxes, scrfd.boxes).max(axis=1) >= 0.5).all()
    kps = result.kps
    assert kps is not None and (kps[:, 0, 0] < kps[:, 1, 0]).all()  # image-left eye first (FaceKeypoint order)


def test_yunet_matches_opencv_facedetectoryn():
    model = _model()
    det = create_detector(model)
    faces_seen = 0
    for rel in IMAGES:
        img = load_image(shared_data.shared_file(rel))
        ref = _opencv(model, img)
        got = det.detect(img)
        assert len(got) == len(ref), rel
        boxes = ref[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]  # OpenCV gives (x, y, w, h)
        np.testing.assert_allclose(got.boxes, boxes, atol=1e-3, err_msg=rel)
        np.testing.assert_allclose(got.scores, ref[:, 14], atol=1e-5, err_msg=rel)
        np.testing.assert_allclose(got.kps.reshape(-1, 10), ref[:, 4:14], atol=1e-3, err_msg=rel)
        faces_seen += len(ref)
    assert faces_seen >= 15


def test_yunet_thresholds_and_letterbox_size():
    model = _model()
    img = load_image(shared_data.shared_file("data/images/t1.jpg"))
    low = create_detector(model, det_thresh=0.5, nms_thresh=0.4)
    ref = _opencv(model, img, score=0.5, nms=0.4)
    got = low.detect(img)
    assert len(got) == len(ref) >= 6
    # det_size letterboxes: OpenCV run on the same canvas, mapped back by the scale.
    from facelab.ops.boxes import letterbox

    sized = create_detector(model, det_size=(640, 640))
    canvas, scale = letterbox(img, (640, 640))
    ref = _opencv(model, canvas)
    got = sized.detect(img, max_num=3, metric="max")
    assert len(ref) >= 3 and len(got) == 3
    boxes = ref[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    boxes /= scale
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(got.boxes, boxes[np.argsort(-areas)[:3]], atol=1e-2)


def test_pad_to_multiple():
    img = np.ones((33, 64, 3), np.uint8)
    out = pad_to_multiple(img)
    assert out.shape == (64, 64, 3) and out[:33].all() and not out[33:].any()
    assert pad_to_multiple(out) is out
