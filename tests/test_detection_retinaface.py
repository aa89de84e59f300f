"""RetinaFace decoding on tiny ONNX models with the real signatures, against hand-computed boxes.

Each model is a 1x1 strided convolution per level: it samples one input pixel per cell, so a
black image with a single white pixel lights up exactly one cell of the stride-8 level; constant
biases give that cell known regressions. Expected boxes follow from the published formulas by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import shared_data
from facelab.detection import RetinaFace, create_detector
from facelab.errors import ModelError

onnx = shared_data.require_module("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

H, W = 64, 96
LOC = (0.5, -0.5, 0.2, 0.1)
LANDMARKS = ((0.1, 0.2), (-0.3, 0.4), (0.0, 0.0), (0.5, -0.5), (1.0, 1.0))


def _image(x: int, y: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[y, x] = 255
    return img


def _conv(nodes, inits, name, src, stride, weight, bias):
    inits += [
        numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"),
        numpy_helper.from_array(bias.astype(np.float32), f"{name}_b"),
    ]
    nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [name], strides=[stride, stride]))


def _priorbox_model(tmp_path) -> str:
    nodes, inits = [], []
    heads = {"loc": 4, "conf": 2, "landms": 10}
    parts: dict[str, list[str]] = {k: [] for k in heads}
    for level, step in enumerate((8, 16, 32)):
        for head, width in heads.items():
            weight = np.zeros((2 * width, 3, 1, 1))
            bias = np.zeros(2 * width)
            if head == "loc" and level == 0:
                bias[4:8] = LOC  # anchor 1 (min size 32)
            if head == "landms" and level == 0:
                bias[10:20] = np.ravel(LANDMARKS)
            if head == "conf":
                bias[1] = -5.0  # anchor 0: face logit -5 everywhere
                bias[3] = -5.0
                if level == 0:  # anchor 1 face logit = 0.1 * (B - 104)
                    weight[3, 0, 0, 0] = 0.1
                    bias[3] = 0.0
            name = f"{head}{level}"
            _conv(nodes, inits, name, "input0", step, weight, bias)
            nodes.append(helper.make_node("Transpose", [name], [f"{name}_t"], perm=[0, 2, 3, 1]))
            inits.append(numpy_helper.from_array(np.array([0, -1, width], np.int64), f"{name}_s"))
            nodes.append(helper.make_node("Reshape", [f"{name}_t", f"{name}_s"], [f"{name}_r"]))
            parts[head].append(f"{name}_r")
    nodes.append(helper.make_node("Concat", parts["loc"], ["loc"], axis=1))
    nodes.append(helper.make_node("Concat", parts["conf"], ["conf_raw"], axis=1))
    nodes.append(helper.make_node("Softmax", ["conf_raw"], ["conf"], axis=2))
    nodes.append(helper.make_node("Concat", parts["landms"], ["landms"], axis=1))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "P", w]) for n, w in heads.items()]
    graph = helper.make_graph(
        nodes,
        "tiny_retinaface",
        [helper.make_tensor_value_info("input0", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "tiny_retinaface.onnx"
    onnx.save(model, str(path))
    return str(path)


def _expected_priorbox(px: float, py: float):
    # prior of the lit cell: centre ((j + 0.5) * 8, (i + 0.5) * 8) px, size 32 px (second min size)
    cx, cy = px + 0.5 * 0.1 * 32, py - 0.5 * 0.1 * 32
    w, h = 32 * math.exp(0.2 * 0.2), 32 * math.exp(0.1 * 0.2)
    box = [cx - w / 2, cy - h / 2, cx - w / 2 + w, cy - h / 2 + h]
    kps = [[px + dx * 0.1 * 32, py + dy * 0.1 * 32] for dx, dy in LANDMARKS]
    return box, kps


def test_priorbox_layout_decodes_hand_example(tmp_path):
    path = _priorbox_model(tmp_path)
    det = create_detector(path, det_size=None)
    assert isinstance(det, RetinaFace) and det.layout == "priorbox" and det.supports_batch
    result = det.detect(_image(40, 24))  # cell i = 3, j = 5 of the stride-8 level
    assert len(result) == 1
    box, kps = _expected_priorbox(44.0, 28.0)
    np.testing.assert_allclose(result.boxes[0], box, atol=1e-3)
    np.testing.assert_allclose(result.kps[0], kps, atol=1e-3)
    assert result.scores[0] == pytest.approx(1 / (1 + math.exp(-0.1 * (255 - 104))), abs=1e-6)
    assert len(det.detect(np.zeros((H, W, 3), np.uint8))) == 0


def test_priorbox_layout_batch_one_run(tmp_path):
    det = create_detector(_priorbox_model(tmp_path), det_size=(W, H))  # canvas = image size, scale 1
    calls = []
    real_run = det.session.session.run
    det.session.session.run = lambda names, feeds: (
        calls.append(next(iter(feeds.values())).shape) or real_run(names, feeds)
    )
    first, second = det.detect_batch([_image(40, 24), _image(80, 8)])
    assert calls == [(2, 3, H, W)]
    np.testing.assert_allclose(first.boxes[0], _expected_priorbox(44.0, 28.0)[0], atol=1e-3)
    np.testing.assert_allclose(second.boxes[0], _expected_priorbox(84.0, 12.0)[0], atol=1e-3)
    # letterboxing a 2x larger image halves the coordinates back: same face, twice the size
    big = np.zeros((2 * H, 2 * W, 3), np.uint8)
    big[48:50, 80:82] = 255
    (scaled,) = det.detect_batch([big])
    assert len(scaled) == 1 and scaled.boxes[0, 2] - scaled.boxes[0, 0] == pytest.approx(
        2 * 32 * math.exp(0.04), abs=1e-2
    )


MX_LOC = (0.1, 0.2, 0.0, 0.5)


def _mxnet_model(tmp_path, with_landmarks: bool = True) -> str:
    nodes, inits, outputs = [], [], []
    for stride in (32, 16, 8):
        lit = stride == 8
        weight = np.zeros((4, 3, 1, 1))
        bias = np.full(4, -5.0)
        if lit:
            weight[3, 0, 0, 0] = 0.1  # face score of anchor 1 = sigmoid(0.1 * R - 5)
        _conv(nodes, inits, f"cls{stride}", "data", stride, weight, bias)
        nodes.append(helper.make_node("Sigmoid", [f"cls{stride}"], [f"face_rpn_cls_prob_reshape_stride{stride}"]))
        bias = np.zeros(8)
        if lit:
            bias[4:8] = MX_LOC
        _conv(nodes, inits, f"face_rpn_bbox_pred_stride{stride}", "data", stride, np.zeros((8, 3, 1, 1)), bias)
        names = [f"face_rpn_cls_prob_reshape_stride{stride}", f"face_rpn_bbox_pred_stride{stride}"]
        if with_landmarks:
            bias = np.zeros(20)
            if lit:
                bias[10:20] = np.ravel(LANDMARKS)
            _conv(nodes, inits, f"face_rpn_landmark_pred_stride{stride}", "data", stride, np.zeros((20, 3, 1, 1)), bias)
            names.append(f"face_rpn_landmark_pred_stride{stride}")
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, None, None, None]) for n in names]
    graph = helper.make_graph(
        nodes,
        "tiny_mxnet_retinaface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, "H", "W"])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    path = tmp_path / f"tiny_mxnet_{int(with_landmarks)}.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_mxnet_layout_decodes_hand_example(tmp_path):
    det = create_detector(_mxnet_model(tmp_path), det_size=None)
    assert isinstance(det, RetinaFace) and det.layout == "mxnet" and det.with_kps
    result = det.detect(_image(40, 24))
    assert len(result) == 1
    # anchor 1 of stride 8 (scale 1): base [0, 0, 15, 15] + (40, 24) -> w = h = 16, centre (47.5, 31.5)
    cx, cy = 0.1 * 16 + 47.5, 0.2 * 16 + 31.5
    pw, ph = 16.0, 16 * math.exp(0.5)
    np.testing.assert_allclose(
        result.boxes[0], [cx - 0.5 * (pw - 1), cy - 0.5 * (ph - 1), cx + 0.5 * (pw - 1), cy + 0.5 * (ph - 1)], atol=1e-3
    )
    np.testing.assert_allclose(result.kps[0], [[47.5 + dx * 16, 31.5 + dy * 16] for dx, dy in LANDMARKS], atol=1e-3)
    assert result.scores[0] == pytest.approx(1 / (1 + math.exp(-(0.1 * 255 - 5))), abs=1e-6)
    # without landmarks: 6 outputs, kps None
    det6 = create_detector(_mxnet_model(tmp_path, with_landmarks=False), det_size=None)
    plain = det6.detect(_image(40, 24))
    assert plain.kps is None and len(plain) == 1
    np.testing.assert_allclose(plain.boxes, result.boxes, atol=1e-5)


def test_mxnet_boxes_are_clipped_to_the_input(tmp_path):
    det = create_detector(_mxnet_model(tmp_path), det_size=None)
    result = det.detect(_image(0, 0))  # anchor [0, 0, 15, 15]: x1 = 1.6 and y1 = 3.2 - 12.69 < 0 -> clipped to 0
    assert len(result) == 1 and result.boxes[0, 1] == 0.0


def test_wrong_layout_is_a_model_error(tmp_path):
    path = _mxnet_model(tmp_path)
    with pytest.raises(ModelError, match="not a YuNet model"):
        from facelab.detection import YuNet

        YuNet.from_path(path)
    with pytest.raises(ModelError, match="not a RetinaFace model"):
        RetinaFace.from_path(
            str(__import__("shared_data").shared_file("models/yunet/face_detection_yunet_2026may.onnx"))
        )


def test_zoo_folder_classification_agrees_with_create_detector(tmp_path):
    """An MXNet-layout RetinaFace in a pack folder is a RetinaFace (not an SCRFD) for the zoo too."""
    from facelab.zoo import identify_model

    for path in (_mxnet_model(tmp_path), _priorbox_model(tmp_path)):
        card = identify_model(path, home=tmp_path / "home")
        det = create_detector(path, det_size=None)
        assert (card.task, card.arch) == ("detection", "retinaface")
        assert card.normalization == det.normalization
