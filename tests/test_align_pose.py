"""Head pose from 68 3D landmarks: known rotations, InsightFace parity, mean-shape discovery."""

from __future__ import annotations

import logging
import math
import os
import pickle
import sys
import warnings

import numpy as np
import pytest

from facelab.alignment import pose
from facelab.alignment.pose import (
    MEANSHAPE_ENV,
    decompose_affine_3d,
    estimate_affine_3d,
    estimate_pose,
    find_meanshape,
    load_meanshape,
    rotation_to_euler,
)
from facelab.errors import ConfigError, ModelError
from shared_data import require_module, shared_file


@pytest.fixture(scope="module")
def meanshape_file():
    return shared_file("data/landmarks/meanshape_68.pkl")


@pytest.fixture(scope="module")
def meanshape(meanshape_file) -> np.ndarray:
    shape = load_meanshape(meanshape_file)
    assert shape is not None and shape.shape == (68, 3) and shape.dtype == np.float32
    return shape


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    x, y, z = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


ANGLES = [(0.0, 0.0, 0.0), (10.0, -25.0, 5.0), (-30.0, 40.0, -15.0), (5.0, 70.0, 20.0), (-12.5, -60.0, 33.0)]


def _head(meanshape: np.ndarray, angles: tuple[float, float, float]) -> np.ndarray:
    """The mean shape rotated by known angles, scaled to ~100 px and moved into an image."""
    return meanshape.astype(np.float64) @ _rotation(*angles).T * 97.0 + np.array([640.0, 420.0, 15.0])


@pytest.mark.parametrize("angles", ANGLES)
def test_recovers_known_rotation(meanshape: np.ndarray, angles) -> None:
    out = estimate_pose(_head(meanshape, angles).astype(np.float32), meanshape)
    assert out is not None and out.shape == (3,) and out.dtype == np.float32
    np.testing.assert_allclose(out, angles, atol=1e-4)  # float32 landmarks
    exact = np.asarray(
        rotation_to_euler(decompose_affine_3d(estimate_affine_3d(meanshape, _head(meanshape, angles)))[1])
    )
    np.testing.assert_allclose(exact, angles, atol=1e-4)


@pytest.mark.oracle
@pytest.mark.parametrize("angles", ANGLES)
def test_equals_insightface(meanshape: np.ndarray, angles) -> None:
    require_module("insightface")
    from insightface.utils import transform as oracle

    rng = np.random.default_rng(7)
    lmk = (_head(meanshape, angles) + rng.normal(0, 1.5, (68, 3))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = oracle.estimate_affine_matrix_3d23d(meanshape, lmk)
    s, r, t = oracle.P2sRt(p)
    theirs = np.array(oracle.matrix2angle(r))
    ours_p = estimate_affine_3d(meanshape, lmk)
    np.testing.assert_allclose(ours_p, p, atol=1e-6)
    ours_s, ours_r, ours_t = decompose_affine_3d(ours_p)
    assert ours_s == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(ours_r, r, atol=1e-9)
    np.testing.assert_allclose(np.asarray(rotation_to_euler(ours_r)), theirs, atol=1e-4)
    np.testing.assert_allclose(estimate_pose(lmk, meanshape), theirs, atol=1e-4)


def test_gimbal_lock_branch() -> None:
    r = _rotation(0.0, 90.0, 0.0)
    pitch, yaw, roll = rotation_to_euler(r)
    assert yaw == pytest.approx(90.0) and roll == 0.0 and pitch == pytest.approx(0.0, abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(ConfigError):
        estimate_pose(np.zeros((68, 2)), np.zeros((68, 3)))
    with pytest.raises(ConfigError):
        estimate_affine_3d(np.zeros((5, 3)), np.zeros((6, 3)))
    with pytest.raises(ConfigError):
        decompose_affine_3d(np.zeros((3, 4)))


def test_meanshape_from_explicit_path_and_env(meanshape_file, meanshape: np.ndarray, monkeypatch, tmp_path) -> None:
    with open(meanshape_file, "rb") as fh:  # the oracle file, read directly, for the expected values
        expected = pickle.load(fh)
    np.testing.assert_array_equal(meanshape, expected)
    monkeypatch.setenv(MEANSHAPE_ENV, str(meanshape_file))
    assert find_meanshape() == meanshape_file
    np.testing.assert_array_equal(load_meanshape(), expected)
    monkeypatch.setenv(MEANSHAPE_ENV, str(tmp_path / "absent.pkl"))
    with pytest.raises(ModelError):
        load_meanshape()
    # .npy and text copies work too.
    np.save(tmp_path / "mean.npy", expected)
    np.savetxt(tmp_path / "mean.txt", expected)
    np.testing.assert_array_equal(load_meanshape(tmp_path / "mean.npy"), expected)
    np.testing.assert_allclose(load_meanshape(tmp_path / "mean.txt"), expected, atol=1e-6)


@pytest.mark.oracle
def test_meanshape_from_installed_insightface(monkeypatch) -> None:
    monkeypatch.delenv(MEANSHAPE_ENV, raising=False)
    require_module("insightface")
    import insightface

    found = find_meanshape()
    assert found is not None
    assert os.path.commonpath([found, os.path.dirname(insightface.__file__)]) == os.path.dirname(insightface.__file__)
    assert found.name == "meanshape_68.pkl"


def test_no_meanshape_means_no_pose_and_one_warning(monkeypatch, caplog) -> None:
    monkeypatch.delenv(MEANSHAPE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "insightface", None)  # as if insightface were not installed
    monkeypatch.setattr(pose, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="facelab.alignment.pose"):
        assert load_meanshape() is None
        assert estimate_pose(np.zeros((68, 3))) is None
    warnings_seen = [r for r in caplog.records if "FACELAB_MEANSHAPE_68" in r.getMessage()]
    assert len(warnings_seen) == 1


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_meanshape_pickle_is_restricted(tmp_path) -> None:
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ModelError, match="refusing"):
        load_meanshape(bad)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 3)))
    with pytest.raises(ModelError):
        load_meanshape(wrong)
