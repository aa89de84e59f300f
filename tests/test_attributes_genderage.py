"""Gender/age runner: InsightFace parity on a tiny model, decoding, other attribute sizes, batching."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from facelab.attributes import AttributeRunner, decode_genderage, default_attribute_card
from facelab.errors import ConfigError
from facelab.registry import RUNNERS
from facelab.structures import Face
from onnx_builders import T1_BOXES, build_genderage
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


def _oracle(path, img: np.ndarray, boxes: np.ndarray) -> list:
    require_module("insightface")
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo.attribute import Attribute

    model = Attribute(str(path))
    out = []
    for box in boxes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(model.get(img, InsightFace(bbox=box)))
    return out


def test_decode_hand_values() -> None:
    gender, age = decode_genderage(np.array([[0.2, 0.8, 0.25], [0.9, 0.1, 0.071], [0.5, 0.4, 0.994]], np.float32))
    assert gender.tolist() == [1, 0, 0]
    assert age.tolist() == [25, 7, 99]
    with pytest.raises(ConfigError):
        decode_genderage(np.zeros((2, 4)))


@pytest.mark.oracle
@pytest.mark.parametrize("in_graph", [True, False])
def test_gender_age_equal_insightface(tmp_path, t1: np.ndarray, in_graph: bool) -> None:
    path = build_genderage(tmp_path / "genderage.onnx", in_graph_norm=in_graph)
    runner = RUNNERS.get("genderage").from_card(
        default_attribute_card(path, in_graph_normalization=in_graph), path, None
    )
    gender, age = runner.predict(t1, T1_BOXES)
    theirs = _oracle(path, t1, T1_BOXES)
    assert gender.tolist() == [int(g) for g, _ in theirs]
    assert age.tolist() == [a for _, a in theirs]
    assert len(set(gender.tolist())) == 2  # the tiny model does separate these faces


@pytest.mark.oracle
def test_other_attribute_sizes_are_raw(tmp_path, t1: np.ndarray) -> None:
    path = build_genderage(tmp_path / "attr5.onnx", out_dim=5, seed=12)
    runner = RUNNERS.get("attribute").from_card(default_attribute_card(path, task="attribute"), path, None)
    raw = runner.predict_raw(t1, T1_BOXES)
    assert raw.shape == (6, 5)
    np.testing.assert_allclose(raw, np.stack(_oracle(path, t1, T1_BOXES)), atol=1e-5)
    faces = [Face(bbox=b, score=0.9) for b in T1_BOXES[:2]]
    runner.annotate(t1, faces)
    np.testing.assert_allclose(faces[0].attributes["attribute_5"], raw[0], atol=1e-6)
    assert faces[0].gender is None


def test_batched_annotate_over_images(tmp_path, t1: np.ndarray) -> None:
    path = build_genderage(tmp_path / "ga.onnx")
    runner = AttributeRunner.from_card(default_attribute_card(path), path, batch_size=4)
    calls: list[int] = []
    original = runner.session.run

    def counting(feeds, output_names=None):
        calls.append(len(next(iter(feeds.values()))))
        return original(feeds, output_names)

    runner.session.run = counting  # type: ignore[method-assign]
    flipped = np.ascontiguousarray(t1[::-1])
    boxes_flipped = T1_BOXES.copy()
    boxes_flipped[:, [1, 3]] = t1.shape[0] - T1_BOXES[:, [3, 1]]
    faces = [[Face(bbox=b, score=0.9) for b in T1_BOXES], [], [Face(bbox=b, score=0.9) for b in boxes_flipped[:3]]]
    runner.annotate([t1, np.zeros((20, 20, 3), np.uint8), flipped], faces)
    assert calls == [4, 4, 1]
    calls.clear()
    expected_g, expected_a = runner.predict(flipped, boxes_flipped[:3])
    assert [f.gender for f in faces[2]] == expected_g.tolist()
    assert [f.age for f in faces[2]] == expected_a.tolist()
    assert all(isinstance(f.age, int) and f.sex in ("M", "F") for f in faces[0])


def test_wrong_card(tmp_path) -> None:
    path = build_genderage(tmp_path / "ga.onnx")
    with pytest.raises(ConfigError):
        AttributeRunner.from_card(default_attribute_card(path, task="recognition"), path)
