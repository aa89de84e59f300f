"""Cosine similarity and the squared-L2 relation, on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

import facelab
from facelab.errors import ConfigError
from facelab.recognition.compare import (
    compare,
    cosine_to_squared_l2,
    normalize,
    similarity_matrix,
    squared_l2_to_cosine,
)
from facelab.structures import Face


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([3.0, 4.0], [4.0, 3.0], 24.0 / 25.0),
        ([30.0, 40.0], [4.0, 3.0], 24.0 / 25.0),  # raw vs normalised: scale does not matter
        ([1.0, 2.0, 2.0], [2.0, 1.0, -2.0], 0.0),
        ([1.0, 2.0, 2.0], [-1.0, -2.0, -2.0], -1.0),
        ([1.0, 1.0], [1.0, 0.0], 1.0 / np.sqrt(2.0)),
        ([2.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0.0),  # a zero vector is similar to nothing
    ],
)
def test_compare_hand_values(a, b, expected) -> None:
    assert compare(np.array(a), np.array(b)) == pytest.approx(expected, abs=1e-12)
    assert compare(a, b) == pytest.approx(expected, abs=1e-12)


def test_compare_faces_and_lazy_export() -> None:
    fa = Face(bbox=np.zeros(4), score=1.0, embedding=np.array([3.0, 4.0], np.float32))
    fb = Face(bbox=np.zeros(4), score=1.0, embedding=np.array([4.0, 3.0], np.float32))
    assert compare(fa, fb) == pytest.approx(0.96, abs=1e-7)
    assert facelab.compare is compare
    with pytest.raises(ConfigError):
        compare(fa, Face(bbox=np.zeros(4), score=1.0))
    with pytest.raises(ConfigError):
        compare([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError):
        compare([], [])
    with pytest.raises(ConfigError):
        compare([np.nan, 1.0], [1.0, 1.0])


def test_similarity_matrix_hand_values() -> None:
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[4.0, 3.0], [0.0, 2.0], [-1.0, 0.0]])
    expected = np.array([[0.96, 0.8, -0.6], [0.8, 0.0, -1.0]])
    out = similarity_matrix(a, b)
    assert out.shape == (2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    faces = [Face(bbox=np.zeros(4), score=1.0, embedding=v) for v in a]
    np.testing.assert_allclose(similarity_matrix(faces, list(b)), expected, atol=1e-6)
    assert similarity_matrix(np.zeros((0, 2)), b).shape == (0, 3)
    with pytest.raises(ConfigError):
        similarity_matrix(a, np.ones((2, 3)))


def test_squared_l2_relation() -> None:
    # Unit vectors (0.6, 0.8) and (0.8, 0.6): cosine 0.96, squared distance 0.2^2 + 0.2^2 = 0.08.
    assert cosine_to_squared_l2(0.96) == pytest.approx(0.08)
    assert squared_l2_to_cosine(0.08) == pytest.approx(0.96)
    assert cosine_to_squared_l2(-1.0) == 4.0 and cosine_to_squared_l2(1.0) == 0.0
    assert squared_l2_to_cosine(2.0) == 0.0
    np.testing.assert_allclose(cosine_to_squared_l2(np.array([1.0, 0.0, -1.0])), [0.0, 2.0, 4.0])
    np.testing.assert_allclose(squared_l2_to_cosine(np.array([0.0, 4.0])), [1.0, -1.0])


def test_normalize() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    assert out.dtype == np.float32
