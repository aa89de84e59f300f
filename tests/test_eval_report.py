"""Reports: JSON conversion, terminal table, and PNG plots (or the clear error without matplotlib)."""

import json
import sys

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.report import format_table, plot_verification, to_jsonable, write_json
from shared_data import require_module


def test_json_and_table(tmp_path):
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": (1, np.int64(2))}
    assert to_jsonable(data) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1, 2]}
    write_json(tmp_path / "sub" / "r.json", data)
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["b"] == [0, 1, 2]
    text = format_table([["accuracy", 0.98765], ["eer", None]], header=["metric", "value"])
    assert text.splitlines() == ["metric    value", "--------  ------", "accuracy  0.9877", "eer       n/a"]


def test_plots_written(tmp_path):
    require_module("matplotlib")  # in the test extra: a broken install fails in CI instead of being skipped
    scores = np.r_[np.linspace(0.3, 0.9, 50), np.linspace(-0.2, 0.4, 50)]
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    paths = plot_verification(scores, same, tmp_path / "roc.png", threshold=0.35)
    assert [p.name for p in paths] == ["roc.png", "roc_det.png", "roc_hist.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_plots_without_matplotlib_raise_clear_error(tmp_path, monkeypatch):
    # A None entry in sys.modules makes ``import matplotlib`` raise ImportError, as when it is not installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    scores = np.r_[np.linspace(0.3, 0.9, 5), np.linspace(-0.2, 0.4, 5)]
    same = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    with pytest.raises(ConfigError, match="matplotlib"):
        plot_verification(scores, same, tmp_path / "roc.png")
    assert not (tmp_path / "roc.png").exists()
