"""ArcFace recogniser runner: InsightFace parity on a tiny model, batching, run-call counts, errors."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from facelab.errors import ConfigError, ModelError, ModelNotFoundError
from facelab.recognition import ArcFaceRecognizer, create_recognizer, default_recognizer_card
from facelab.registry import RUNNERS
from facelab.structures import Face
from onnx_builders import T1_KPS, build_recognizer
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_recognizer(tmp_path_factory.mktemp("rec") / "w600k_tiny.onnx")


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def oracle(model_path):
    require_module("insightface")
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = ArcFaceONNX(str(model_path))
    assert (model.input_mean, model.input_std) == (127.5, 127.5)  # InsightFace sees no in-graph normalisation
    return model


def _count_runs(recognizer: ArcFaceRecognizer) -> list[int]:
    """Wrap the session's run so calls (and their batch sizes) are recorded."""
    sizes: list[int] = []
    original = recognizer.session.run

    def counting(feeds, output_names=None):
        sizes.append(len(next(iter(feeds.values())) if isinstance(feeds, dict) else feeds))
        return original(feeds, output_names)

    recognizer.session.run = counting  # type: ignore[method-assign]
    return sizes


def test_model_facts_and_registry(model_path) -> None:
    rec = create_recognizer(model_path)
    assert RUNNERS.get("recognition") is ArcFaceRecognizer
    assert (rec.input_size, rec.embedding_dim, rec.batch_size) == (112, 512, 32)
    card = default_recognizer_card(model_path)
    assert (card.color_order, card.mean, card.std) == ("RGB", (127.5,) * 3, (127.5,) * 3)
    via_registry = RUNNERS.get("recognition").from_card(card, model_path, None)
    assert via_registry.input_size == 112


@pytest.mark.oracle
def test_embedding_equals_insightface_on_same_crops(model_path, oracle, t1: np.ndarray) -> None:
    rec = create_recognizer(model_path)
    crops = rec.align(t1, T1_KPS)
    ours = rec.embed(crops)
    theirs = np.stack([oracle.get_feat(c)[0] for c in crops])
    assert ours.shape == (6, 512) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.oracle
def test_end_to_end_embedding_matches_insightface_get(model_path, oracle, t1: np.ndarray) -> None:
    require_module("insightface")
    from insightface.app.common import Face as InsightFace

    rec = create_recognizer(model_path)
    ours = rec.embed_faces(t1, T1_KPS)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = np.stack([oracle.get(t1, InsightFace(kps=k)) for k in T1_KPS])
    # Crops may differ by one grey level in a few pixels (InsightFace's float32 Umeyama), so the
    # raw embeddings agree to ~1e-4 of their scale; cosine similarity to 1e-6.
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale
    for a, b in zip(ours, theirs):
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 1 - 1e-6


@pytest.mark.parametrize("chunk", [1, 3, 32])
def test_batched_embedding_equals_one_by_one(model_path, t1: np.ndarray, chunk: int) -> None:
    single = create_recognizer(model_path, batch_size=1)
    crops = single.align(t1, T1_KPS)
    one_by_one = np.concatenate([single.embed(c[None]) for c in crops])
    rec = create_recognizer(model_path, batch_size=chunk)
    sizes = _count_runs(rec)
    batched = rec.embed(crops)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    assert len(sizes) == math.ceil(len(crops) / chunk)  # one session.run per chunk
    assert sizes == [min(chunk, len(crops) - i) for i in range(0, len(crops), chunk)]


def test_embed_faces_batches_across_images(model_path, t1: np.ndarray) -> None:
    flipped = np.ascontiguousarray(t1[:, ::-1])
    kps_flipped = T1_KPS.copy()
    kps_flipped[..., 0] = t1.shape[1] - 1 - kps_flipped[..., 0]
    kps_flipped = kps_flipped[:, [1, 0, 2, 4, 3]]  # mirrored: left/right swap roles
    empty = np.zeros((50, 60, 3), np.uint8)
    rec = create_recognizer(model_path, batch_size=4)
    sizes = _count_runs(rec)
    result = rec.embed_faces([t1, empty, flipped], [T1_KPS, np.zeros((0, 5, 2)), kps_flipped[:2]])
    assert [r.shape for r in result] == [(6, 512), (0, 512), (2, 512)]
    assert sizes == [4, 4]  # 8 faces of three images in two calls
    np.testing.assert_allclose(result[0], rec.embed(rec.align(t1, T1_KPS)), atol=1e-5)
    np.testing.assert_allclose(result[2], rec.embed(rec.align(flipped, kps_flipped[:2])), atol=1e-5)
    assert [r.shape for r in rec.embed_faces([empty], [np.zeros((0, 5, 2))])] == [(0, 512)]


def test_fixed_batch_model_is_looped(tmp_path, model_path, t1: np.ndarray) -> None:
    fixed = create_recognizer(build_recognizer(tmp_path / "fixed.onnx", batch=1), batch_size=32)
    dynamic = create_recognizer(model_path)  # same seed, same weights
    sizes = _count_runs(fixed)
    crops = dynamic.align(t1, T1_KPS)
    np.testing.assert_allclose(fixed.embed(crops), dynamic.embed(crops), atol=1e-5)
    assert sizes == [1] * 6


def test_annotate_fills_faces(model_path, t1: np.ndarray) -> None:
    rec = create_recognizer(model_path)
    faces = [Face(bbox=np.zeros(4, np.float32), score=0.9, kps=k) for k in T1_KPS[:3]]
    rec.annotate(t1, faces)
    expected = rec.embed(rec.align(t1, T1_KPS[:3]))
    for face, emb in zip(faces, expected):
        np.testing.assert_allclose(face.embedding, emb, atol=1e-6)
        assert face.model == "w600k_tiny.local"
    with pytest.raises(ConfigError):
        rec.annotate(t1, [Face(bbox=np.zeros(4), score=1.0)])


def test_errors(tmp_path, model_path) -> None:
    rec = create_recognizer(model_path)
    with pytest.raises(ConfigError):
        rec.embed(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ModelNotFoundError):
        create_recognizer(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError):
        create_recognizer(default_recognizer_card(model_path))  # a card needs path=
    with pytest.raises(ConfigError):
        create_recognizer(model_path, batch_size=0)
    with pytest.raises(ModelError):
        create_recognizer(default_recognizer_card(model_path, embedding_dim=128), path=model_path)
    assert rec.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 512)
