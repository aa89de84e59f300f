"""Reports: JSON conversion, terminal table, and PNG plots (or the clear error without matplotlib)."""

import importlib.util
import json

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.report import format_table, plot_verification, to_jsonable, write_json


def test_json_and_table(tmp_path):
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), "d": (1, np.int64(2))}
    assert to_jsonable(data) == {"a": 0.5, "b": [0, 1, 2], "c": None, "d": [1, 2]}
    write_json(tmp_path / "sub" / "r.json", data)
    assert json.loads((tmp_path / "sub" / "r.json").read_text())["b"] == [0, 1, 2]
    text = format_table([["accuracy", 0.98765], ["eer", None]], header=["metric", "value"])
    assert text.splitlines() == ["metric    value", "--------  ------", "accuracy  0.9877", "eer       n/a"]


def test_plots_or_clear_error(tmp_path):
    scores = np.r_[np.linspace(0.3, 0.9, 50), np.linspace(-0.2, 0.4, 50)]
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(ConfigError, match="matplotlib"):
            plot_verification(scores, same, tmp_path / "roc.png")
        return
    paths = plot_verification(scores, same, tmp_path / "roc.png", threshold=0.35)
    assert [p.name for p in paths] == ["roc.png", "roc_det.png", "roc_hist.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
