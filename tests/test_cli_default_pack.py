"""The README's main command: the open pack, built offline on a fresh home, no file supplied by the user."""

import json
import os
import subprocess

import pytest

import shared_data
from cli_helpers import script_command
from shared_data import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    shared_data.require_module("skimage")
    env = dict(os.environ)
    env["FACELAB_HOME"] = str(tmp_path_factory.mktemp("fresh-home"))
    env["FACELAB_OFFLINE"] = "1"  # nothing may be downloaded
    return env


def _run(args, env):
    return subprocess.run([*script_command(), *args], capture_output=True, text=True, env=env, timeout=300)


def test_analyze_sample_photo_with_default_pack_offline(fresh_env):
    proc = _run(["analyze", "sample:astronaut", "--json", "--embeddings"], fresh_env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["path"].endswith("astronaut.png")
    (face,) = record["faces"]
    x1, y1, x2, y2 = face["bbox"]
    # The astronaut's face lies in the upper-middle of the 512x512 portrait.
    assert 100 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 250
    assert len(face["embedding"]) == 128
    assert "dlib_shape_5" in face["attributes"]


def test_compare_uses_the_open_pack_threshold(fresh_env):
    folder = shared_file("data/verification/deepface")
    same = _run(["compare", str(folder / "img1.jpg"), str(folder / "img2.jpg"), "--json"], fresh_env)
    assert same.returncode == 0, same.stderr
    result = json.loads(same.stdout)
    assert result["pack"] == "open" and result["threshold"] == pytest.approx(0.923, abs=0.01)
    assert result["same_person"] is True
    other = _run(
        ["compare", str(folder / "img20.jpg"), str(folder / "img1.jpg"), "--json"], fresh_env
    )  # master.csv: No
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["same_person"] is False
