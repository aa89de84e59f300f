"""The joblib/lz4 array reader: the real MTCNN weight files, files joblib writes, and refused or broken input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from facelab.convert.joblib_reader import load_joblib, read_joblib_file
from facelab.convert.safe_pickle import UnsafePickleError
from facelab.errors import ModelError, ModelNotFoundError
from shared_data import missing_dependency


@pytest.fixture(scope="module")
def joblib():
    try:
        import joblib
    except ImportError:  # joblib comes with mtcnn==1.0.0 (the open extra)
        missing_dependency("joblib (installed with mtcnn==1.0.0, the open extra) is the oracle here")
    return joblib


@pytest.fixture(scope="module")
def weights_dir():
    from facelab.mtcnn.convert import weights_path

    try:
        return weights_path("pnet").parent
    except ModelNotFoundError as exc:
        missing_dependency(str(exc))


@pytest.mark.parametrize("network", ["pnet", "rnet", "onet"])
def test_mtcnn_weight_files_read_as_joblib_reads_them(joblib, weights_dir, network):
    path = weights_dir / f"{network}.lz4"
    ours = read_joblib_file(path)
    theirs = joblib.load(path)
    assert isinstance(ours, list) and len(ours) == len(theirs) > 10
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compress", [0, ("lz4", 3), ("zlib", 3)], ids=["plain", "lz4", "zlib"])
def test_files_written_by_joblib(joblib, tmp_path, compress):
    data = {
        "c": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "f": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "scalar": 3,
        "list": [np.float64(1.5), np.zeros((0, 2))],
    }
    path = tmp_path / "x.joblib"
    joblib.dump(data, path, compress=compress)
    got = read_joblib_file(path)
    np.testing.assert_array_equal(got["c"], data["c"])
    np.testing.assert_array_equal(got["f"], data["f"])
    assert got["scalar"] == 3 and got["list"][0] == 1.5 and got["list"][1].shape == (0, 2)


def test_code_in_the_pickle_is_refused_before_it_runs(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("this must not run",))

    with pytest.raises(UnsafePickleError, match="builtins.print"):
        load_joblib(pickle.dumps([Boom()], protocol=4), "evil.pkl")


def test_object_arrays_are_refused(joblib, tmp_path):
    path = tmp_path / "obj.joblib"
    joblib.dump([np.array([{"a": 1}], dtype=object)], path)
    with pytest.raises(UnsafePickleError, match="object array"):
        read_joblib_file(path)


def test_broken_files_give_clear_errors(joblib, weights_dir, tmp_path):
    data = (weights_dir / "pnet.lz4").read_bytes()
    cut = tmp_path / "cut.lz4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt compressed joblib file"):
        read_joblib_file(cut)
    raw = tmp_path / "raw.joblib"
    joblib.dump([np.ones((100, 100), np.float32)], raw)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(raw.read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated joblib array"):
        read_joblib_file(truncated)
    text = tmp_path / "text.lz4"
    text.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match="not a joblib pickle"):
        read_joblib_file(text)
    with pytest.raises(ModelNotFoundError):
        read_joblib_file(tmp_path / "missing.lz4")
    (tmp_path / "empty.lz4").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        read_joblib_file(tmp_path / "empty.lz4")
