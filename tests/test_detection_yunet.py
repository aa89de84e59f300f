"""YuNet on the real OpenCV Zoo file: faces on t1.jpg, the auto mode, parity with OpenCV's FaceDetectorYN."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import shared_data
from facelab.detection import YuNet, create_detector
from facelab.detection.yunet import pad_to_multiple
from facelab.errors import ConfigError
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
    det = create_detector(_model())  # default: auto (native size + 320 letterbox)
    assert isinstance(det, YuNet)
    assert det.passes == [(None, 1280), ((320, 320), None)]
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


def test_yunet_native_matches_opencv_facedetectoryn():
    model = _model()
    det = create_detector(model, det_size="native")
    assert det.passes == [(None, None)]
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
    low = create_detector(model, det_size="native", det_thresh=0.5, nms_thresh=0.4)
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


def _large_face_iou(boxes: np.ndarray) -> float:
    """IoU of the best box with SCRFD-2.5G's face on d1.jpeg (one large face, about 560 px wide)."""
    from facelab.ops.boxes import iou_matrix

    scrfd = create_detector(str(shared_data.shared_file("models/insightface/det_2.5g.onnx")))
    ref = scrfd.detect(shared_data.shared_file("data/images/inspireface/RD/d1.jpeg"))
    assert len(ref) == 1 and ref.boxes[0, 2] - ref.boxes[0, 0] > 400
    return float(iou_matrix(boxes, ref.boxes).max())


def test_auto_finds_the_large_face_that_native_size_misses():
    model = _model()
    img = load_image(shared_data.shared_file("data/images/inspireface/RD/d1.jpeg"))
    assert len(_opencv(model, img)) == 0  # OpenCV at the image's own size: the large face is missed
    assert len(create_detector(model, det_size="native").detect(img)) == 0
    auto = create_detector(model).detect(img)
    assert len(auto) == 1 and auto.scores[0] >= 0.9
    assert _large_face_iou(auto.boxes) >= 0.6


def test_auto_merges_its_passes_with_one_nms():
    """Auto = candidates of the capped native pass and of the 320 letterbox, one OpenCV NMS over both.

    The expected faces come from OpenCV's FaceDetectorYN run on each pass's canvas: every face auto
    reports is one OpenCV finds on one of the canvases, and every OpenCV face is covered by one.
    """
    from facelab.ops.boxes import iou_matrix, letterbox

    model = _model()
    det = create_detector(model)
    for rel in ("data/images/t1.jpg", "data/verification/deepface/img40.jpg"):
        img = load_image(shared_data.shared_file(rel))
        expected = []
        for size in ((1280, 1280), (320, 320)):
            if size == (1280, 1280):
                ratio = min(1.0, 1280 / max(img.shape[:2]))
                if ratio < 1.0:
                    size = (round(img.shape[1] * ratio), round(img.shape[0] * ratio))
                    canvas, scale = letterbox(img, size)
                else:
                    canvas, scale = img, 1.0
            else:
                canvas, scale = letterbox(img, size)
            ref = _opencv(model, pad_to_multiple(canvas))
            boxes = ref[:, :4].copy()
            boxes[:, 2:] += boxes[:, :2]
            expected.append(boxes / scale)
        ref_boxes = np.concatenate(expected)
        got = det.detect(img)
        assert len(got) >= 1
        assert len(got) <= len(ref_boxes)
        ious = iou_matrix(got.boxes, ref_boxes.astype(np.float32))
        assert (ious.max(axis=1) >= 0.99).all(), rel  # each kept box is one pass's OpenCV box
        assert (ious.max(axis=0) > 0.0).all(), rel  # nothing OpenCV found is left uncovered
    # img40 (3061 x 4600): native-size pass downscaled to 1280; the 1208-px face is still found.
    assert len(got) == 1 and got.boxes[0, 2] - got.boxes[0, 0] > 1000
    # a batch of differently sized images gives the one-by-one results
    t1 = load_image(shared_data.shared_file("data/images/t1.jpg"))
    for one, batched in zip((det.detect(t1), got), det.detect_batch([t1, img])):
        np.testing.assert_array_equal(one.boxes, batched.boxes)
        np.testing.assert_array_equal(one.scores, batched.scores)


def test_det_size_forms():
    model = _model()
    assert create_detector(model, det_size="auto").passes == [(None, 1280), ((320, 320), None)]
    assert create_detector(model, auto_max_side=None).passes == [(None, None), ((320, 320), None)]
    assert create_detector(model, det_size=640).passes == [((640, 640), None)]
    assert create_detector(model, det_size=640).det_size == (640, 640)
    both = create_detector(model, det_size=["native", (640, 640)])
    assert both.passes == [(None, None), ((640, 640), None)] and both.det_size is None
    with pytest.raises(ConfigError, match="det_size"):
        create_detector(model, det_size="huge")
    with pytest.raises(ConfigError, match="auto_max_side"):
        create_detector(model, auto_max_side=8)
