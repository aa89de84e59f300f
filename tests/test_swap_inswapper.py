"""Inswapper-style runner: InsightFace INSwapper parity on a tiny model, emap, paste-back, errors."""

from __future__ import annotations

import contextlib
import io
import warnings

import cv2
import numpy as np
import pytest

from facelab.alignment.transform import estimate_norm
from facelab.errors import ConfigError, ModelError
from facelab.registry import RUNNERS
from facelab.structures import Face
from facelab.swap import FaceSwapper, blend_back, default_swapper_card
from onnx_builders import T1_KPS, build_recognizer, build_swapper
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_swapper(tmp_path_factory.mktemp("swap") / "inswapper_tiny.onnx")


@pytest.fixture(scope="module")
def swapper(model_path) -> FaceSwapper:
    return RUNNERS.get("swap").from_card(default_swapper_card(model_path), model_path, None)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return np.random.default_rng(99).normal(0, 1, 512).astype(np.float32) * 20  # a raw, un-normalised embedding


@pytest.fixture(scope="module")
def oracle(model_path):
    require_module("insightface")
    from insightface.model_zoo.inswapper import INSwapper

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its input shape
        return INSwapper(str(model_path))


def _oracle_swap(oracle, img, kps, embedding, paste_back=True):
    from insightface.app.common import Face as InsightFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return oracle.get(img, InsightFace(kps=kps), InsightFace(embedding=embedding), paste_back=paste_back)


def test_emap_is_the_last_initializer(swapper: FaceSwapper, model_path) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    by_name = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    assert swapper.emap.shape == (512, 512) and swapper.emap.dtype == np.float32
    np.testing.assert_array_equal(swapper.emap, by_name["emap"])


def test_latent_is_normalised_mapped_embedding(swapper: FaceSwapper, source: np.ndarray) -> None:
    latent = swapper.latent(source)
    assert latent.shape == (1, 512) and latent.dtype == np.float32
    assert np.linalg.norm(latent) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(swapper.latent(source / np.linalg.norm(source)), latent, atol=1e-6)
    manual = (source / np.linalg.norm(source)) @ swapper.emap
    np.testing.assert_allclose(latent[0], manual / np.linalg.norm(manual), atol=1e-6)


@pytest.mark.oracle
@pytest.mark.parametrize("face", range(6))
def test_swap_equals_insightface(swapper: FaceSwapper, oracle, t1: np.ndarray, source: np.ndarray, face: int) -> None:
    kps = T1_KPS[face]
    crop, matrix = swapper.swap(t1, kps, source, paste_back=False)
    theirs_crop, theirs_m = _oracle_swap(oracle, t1, kps, source, paste_back=False)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert np.abs(crop.astype(np.int16) - theirs_crop).max() <= 1
    np.testing.assert_allclose(matrix, theirs_m, atol=5e-4)
    assert crop.std() > 10  # the tiny model's output is not flat
    out = swapper.swap(t1, kps, source)
    theirs = _oracle_swap(oracle, t1, kps, source)
    assert out.shape == t1.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - theirs).max() <= 1


def test_paste_back_touches_only_the_face(swapper: FaceSwapper, t1: np.ndarray, source: np.ndarray) -> None:
    kps = T1_KPS[1]
    out = swapper.swap(t1, kps, source)
    changed = np.any(out != t1, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000
    # Every changed pixel lies inside the aligned 128 crop's footprint in the image.
    inverse_corners = cv2.transform(
        np.array([[[0, 0], [127, 0], [127, 127], [0, 127]]], np.float64),
        cv2.invertAffineTransform(estimate_norm(kps, 128)),
    )[0]
    assert xs.min() >= inverse_corners[:, 0].min() - 1 and xs.max() <= inverse_corners[:, 0].max() + 1
    assert ys.min() >= inverse_corners[:, 1].min() - 1 and ys.max() <= inverse_corners[:, 1].max() + 1
    # Swapping with a Face object as source gives the same image.
    face = Face(bbox=np.zeros(4), score=1.0, embedding=source, kps=kps)
    np.testing.assert_array_equal(swapper.swap(t1, face, face), out)


def test_face_outside_image_returns_copy(swapper: FaceSwapper, t1: np.ndarray, source: np.ndarray) -> None:
    far = T1_KPS[0] + 5000.0
    out = swapper.swap(t1, far, source)
    np.testing.assert_array_equal(out, t1)
    assert out is not t1
    crop = np.full((128, 128, 3), 200, np.uint8)
    np.testing.assert_array_equal(blend_back(t1, crop, estimate_norm(far, 128)), t1)


def test_errors(tmp_path, swapper: FaceSwapper, t1: np.ndarray, model_path) -> None:
    with pytest.raises(ConfigError):
        swapper.swap(t1, T1_KPS[0], np.ones(128, np.float32))
    with pytest.raises(ConfigError):
        swapper.swap(t1, T1_KPS[0], np.zeros(512, np.float32))
    with pytest.raises(ConfigError):
        swapper.swap(t1, Face(bbox=np.zeros(4), score=1.0), np.ones(512, np.float32))
    with pytest.raises(ConfigError):
        FaceSwapper.from_card(default_swapper_card(model_path, task="recognition"), model_path)
    rec = build_recognizer(tmp_path / "rec.onnx")
    with pytest.raises(ModelError):
        FaceSwapper.from_card(default_swapper_card(rec), rec)
