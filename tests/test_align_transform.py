"""Alignment transforms: Umeyama estimation, ArcFace crops and box crops, against InsightFace's face_align."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from facelab.alignment.templates import ARCFACE_112, arcface_points
from facelab.alignment.transform import (
    bbox_crop_transform,
    crop_transform,
    estimate_norm,
    estimate_similarity,
    invert_affine,
    norm_crop,
    norm_crop_batch,
    template_points,
    transform_points,
    transform_points_2d,
    transform_points_3d,
    warp_crop,
)
from facelab.errors import ConfigError, ImageError
from onnx_builders import T1_KPS
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def face_align():
    require_module("insightface")
    from insightface.utils import face_align as module

    return module


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    img = cv2.imread(str(shared_file("data/images/t1.jpg")))
    assert img is not None and img.shape == (886, 1280, 3)
    return img


def _keypoint_sets(dtype: type) -> list[np.ndarray]:
    """The six real t1 keypoint sets plus seeded perturbations (jitter, scale, rotation, shift)."""
    rng = np.random.default_rng(1234)
    sets = [k.astype(dtype) for k in T1_KPS]
    for base in T1_KPS:
        for _ in range(5):
            centre = base.mean(axis=0)
            angle = rng.uniform(-0.6, 0.6)
            rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            pts = (base - centre) @ rot.T * rng.uniform(0.5, 2.5) + centre + rng.uniform(-60, 60, 2)
            sets.append((pts + rng.normal(0, 2.0, pts.shape)).astype(dtype))
    return sets


def _oracle_norm(face_align, kps: np.ndarray, size: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecates .estimate
        return face_align.estimate_norm(kps, size)


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (7, 2))
    s, theta, t = 0.37, math.radians(23.0), np.array([-41.0, 12.5])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    dst = src @ (s * rot).T + t
    matrix = estimate_similarity(src, dst)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    np.testing.assert_allclose(matrix[:, :2], s * rot, atol=1e-12)
    np.testing.assert_allclose(matrix[:, 2], t, atol=1e-9)


def test_similarity_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [7.0, 9.0]])
    mirrored = src * np.array([-1.0, 1.0])
    matrix = estimate_similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0  # a rotation, not a mirror


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (np.zeros((5, 2)), np.ones((5, 2))),  # all source points coincide
        (np.ones((5, 3)), np.ones((5, 3))),  # wrong dimension
        (np.ones((5, 2)), np.ones((4, 2))),  # different counts
        (np.array([[0.0, 0.0], [np.nan, 1.0]]), np.ones((2, 2))),
    ],
)
def test_similarity_rejects_bad_points(src: np.ndarray, dst: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        estimate_similarity(src, dst)


# InsightFace's ``arcface_dst`` (python-package/insightface/utils/face_align.py, anchor notes §1.6): the
# published 112x112 template, written here rather than read from the code under test.
PUBLISHED_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def test_template_points_follow_insightface_rule() -> None:
    np.testing.assert_allclose(ARCFACE_112.points, PUBLISHED_ARCFACE_112, atol=1e-5, rtol=0)
    np.testing.assert_allclose(template_points(None, 112), PUBLISHED_ARCFACE_112, atol=1e-5)
    np.testing.assert_allclose(template_points("arcface_112_5pt", 224), PUBLISHED_ARCFACE_112 * 2, atol=1e-5)
    # 128 = the 112 template moved 8 px right, not enlarged.
    np.testing.assert_allclose(template_points("arcface_112_5pt", 128), PUBLISHED_ARCFACE_112 + [8.0, 0.0], atol=1e-5)
    # 256 = 128 rule scaled by 2: ratio 2, then +16 px in x.
    np.testing.assert_allclose(
        template_points("arcface_112_5pt", 256), PUBLISHED_ARCFACE_112 * 2 + [16.0, 0.0], atol=1e-5
    )
    explicit = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(template_points(explicit, 50), explicit)
    with pytest.raises(ConfigError):
        template_points(None, 100)
    with pytest.raises(ConfigError):
        template_points("no_such_template", 112)


@pytest.mark.oracle
@pytest.mark.parametrize("size", [112, 128, 224, 256])
def test_estimate_norm_equals_insightface_on_float64_keypoints(face_align, size: int) -> None:
    # InsightFace's template is float32, so scikit-image averages it in float32: the translation
    # (in crop pixels) then differs by a few 1e-6 px; the linear part agrees to 1e-6.
    for kps in _keypoint_sets(np.float64):
        ours, theirs = estimate_norm(kps, size), _oracle_norm(face_align, kps, size)
        np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=1e-6, rtol=0)
        np.testing.assert_allclose(ours[:, 2], theirs[:, 2], atol=2e-5, rtol=0)


@pytest.mark.oracle
@pytest.mark.parametrize("size", [112, 128])
def test_estimate_norm_matches_insightface_on_float32_keypoints(face_align, size: int) -> None:
    # InsightFace (scikit-image) runs Umeyama in float32 when the keypoints are float32, so its
    # translation carries float32 rounding (~1e-4 at these coordinates); facelab works in float64.
    for kps in _keypoint_sets(np.float32):
        ours, theirs = estimate_norm(kps, size), _oracle_norm(face_align, kps, size)
        np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=1e-6, rtol=0)
        np.testing.assert_allclose(ours[:, 2], theirs[:, 2], atol=5e-4, rtol=0)
        mapped_ours = kps.astype(np.float64) @ ours[:, :2].T + ours[:, 2]
        mapped_theirs = kps.astype(np.float64) @ theirs[:, :2].T + theirs[:, 2]
        np.testing.assert_allclose(mapped_ours, mapped_theirs, atol=1e-3)


def test_estimate_norm_maps_keypoints_onto_template() -> None:
    # An independent check: keypoints that ARE a similarity image of the template map back onto it.
    theta = math.radians(-17.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    kps = arcface_points(112).astype(np.float64) @ (2.3 * rot).T + [311.0, 207.0]
    mapped = transform_points_2d(kps, estimate_norm(kps, 112))
    np.testing.assert_allclose(mapped, arcface_points(112), atol=1e-4)


@pytest.mark.oracle
def test_norm_crop_equals_insightface_on_real_photo(face_align, t1: np.ndarray) -> None:
    for dtype in (np.float64, np.float32):
        for kps in _keypoint_sets(dtype):
            for size in (112, 128):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    theirs = face_align.norm_crop(t1, kps, image_size=size)
                ours = norm_crop(t1, kps, size)
                assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
                diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
                assert diff.max() <= 1, (dtype, size, diff.max())
                assert (diff > 0).mean() < 0.01  # at most a few rounding flips


def test_norm_crop_returns_matrix_and_batch_equals_single(t1: np.ndarray) -> None:
    crops = norm_crop_batch(t1, T1_KPS, 112)
    assert crops.shape == (6, 112, 112, 3) and crops.dtype == np.uint8
    for kps, crop in zip(T1_KPS, crops):
        single, matrix = norm_crop(t1, kps, 112, return_matrix=True)
        np.testing.assert_array_equal(crop, single)
        np.testing.assert_allclose(matrix, estimate_norm(kps, 112))
    assert norm_crop_batch(t1, np.zeros((0, 5, 2)), 112).shape == (0, 112, 112, 3)


def test_norm_crop_rejects_bad_input(t1: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        norm_crop(t1, np.zeros((4, 2)))
    with pytest.raises(ImageError):
        norm_crop(np.zeros((5,), np.uint8), T1_KPS[0])
    with pytest.raises(ConfigError):
        norm_crop_batch(t1, T1_KPS[0])


@pytest.mark.parametrize(
    ("center", "size", "scale", "rotation"),
    [
        ((796.3, 411.15), 192, 1.2549, 0.0),
        ((518.1, 340.95), 96, 0.586, 0.0),
        ((320.0, 200.0), 192, 0.9, 30.0),
        ((600.5, 400.25), 128, 2.0, -45.0),
    ],
)
@pytest.mark.oracle
def test_warp_crop_equals_insightface_transform(
    face_align, t1: np.ndarray, center, size: int, scale: float, rotation: float
) -> None:
    theirs_crop, theirs_m = face_align.transform(t1, center, size, scale, rotation)
    ours_crop, ours_m = warp_crop(t1, center, size, scale, rotation)
    np.testing.assert_allclose(ours_m, theirs_m, atol=1e-9)
    np.testing.assert_allclose(crop_transform(center, size, scale, rotation), theirs_m, atol=1e-9)
    assert np.abs(ours_crop.astype(np.int16) - theirs_crop).max() <= 1


def test_bbox_crop_centres_the_box() -> None:
    box = np.array([100.0, 50.0, 180.0, 170.0], np.float32)  # w 80, h 120
    matrix = bbox_crop_transform(box, 192)
    centre = transform_points_2d(np.array([[140.0, 110.0]]), matrix)
    np.testing.assert_allclose(centre, [[96.0, 96.0]], atol=1e-4)
    assert matrix[0, 0] == pytest.approx(192 / (1.5 * 120))
    with pytest.raises(ConfigError):
        bbox_crop_transform([10, 10, 10, 10], 192)


@pytest.mark.oracle
def test_points_and_inverse_equal_insightface(face_align) -> None:
    rng = np.random.default_rng(5)
    matrix = crop_transform((400.0, 300.0), 192, 0.73, 20.0)
    pts2 = rng.uniform(0, 800, (106, 2)).astype(np.float32)
    pts3 = rng.uniform(-50, 800, (68, 3)).astype(np.float32)
    np.testing.assert_allclose(transform_points_2d(pts2, matrix), face_align.trans_points2d(pts2, matrix), atol=1e-3)
    np.testing.assert_allclose(transform_points_3d(pts3, matrix), face_align.trans_points3d(pts3, matrix), atol=1e-3)
    np.testing.assert_allclose(transform_points(pts3, matrix)[:, 2], pts3[:, 2] * 0.73, rtol=1e-6)
    inverse = invert_affine(matrix)
    np.testing.assert_allclose(inverse, cv2.invertAffineTransform(matrix), atol=1e-12)
    back = transform_points_2d(transform_points_2d(pts2, matrix), inverse)
    np.testing.assert_allclose(back, pts2, atol=1e-3)
    with pytest.raises(ConfigError):
        invert_affine(np.zeros((2, 3)))
