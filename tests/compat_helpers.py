"""Helpers for the InsightFace compatibility tests: a buffalo-like pack folder, and the one-import rewrite.

The pack folder follows InsightFace's layout ``<root>/models/<name>/``: the real SCRFD-500M
detector from ``../shared`` (symlinked) plus tiny seeded models with the signatures of
``w600k_mbf.onnx``, ``2d106det.onnx``, ``1k3d68.onnx`` and ``genderage.onnx``
(:mod:`onnx_builders`; InsightFace's own weights for those are not available), under
buffalo_s's file names. Both insightface and facelab load it unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import shared_data
from cli_helpers import link_or_copy
from onnx_builders import build_genderage, build_landmark_2d106, build_landmark_3d68, build_recognizer
from shared_data import shared_file

__all__ = ["PACK_FILES", "build_buffalo_pack", "to_compat", "IMPORT_LINE", "assert_faces_close"]

#: Files of the test pack, in InsightFace's load order (name order).
PACK_FILES = ("1k3d68.onnx", "2d106det.onnx", "det_500m.onnx", "genderage.onnx", "w600k_mbf.onnx")

#: Lines that import InsightFace (the only ones the rewrite may change).
IMPORT_LINE = re.compile(r"^\s*(import insightface\b|from insightface(\.\w+)* import )")


def build_buffalo_pack(root: Path, name: str = "buffalo_l") -> Path:
    """Create ``root/models/<name>/`` with the files of :data:`PACK_FILES`; returns the folder."""
    shared_data.require_module("onnx")
    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    link_or_copy(shared_file("models/insightface/det_500m.onnx"), folder / "det_500m.onnx")
    build_recognizer(folder / "w600k_mbf.onnx")
    build_landmark_2d106(folder / "2d106det.onnx")
    build_landmark_3d68(folder / "1k3d68.onnx")
    build_genderage(folder / "genderage.onnx")
    return folder


def to_compat(source: str) -> str:
    """Rewrite a program's InsightFace imports to facelab's layer; every other line stays byte-identical.

    ``import insightface`` becomes ``import facelab.compat.insightface as insightface`` and
    ``from insightface.x import y`` becomes ``from facelab.compat.insightface.x import y``.
    """
    out = []
    for line in source.splitlines(keepends=True):
        if IMPORT_LINE.match(line):
            line = re.sub(r"^(\s*)import insightface\b", r"\1import facelab.compat.insightface as insightface", line)
            line = re.sub(r"^(\s*)from insightface", r"\1from facelab.compat.insightface", line)
        out.append(line)
    return "".join(out)


def assert_faces_close(ours: dict, theirs: dict, what: str) -> None:
    """Compare two ``{field: value}`` dicts of one face with the core's parity tolerances.

    Boxes and keypoints: 1e-3 px and detector score 1e-5 (the core's SCRFD parity); raw embeddings:
    1e-4 of their scale with cosine similarity above 1 - 1e-6; gender and age exact; pose 1e-3
    degrees. Dense landmarks: 5e-3 px, not the runners' 1e-3: end to end, the boxes they crop from
    differ from InsightFace's by float32 rounding (up to ~3e-5 px at x ~ 1000), and the tiny
    random landmark models amplify that about 60-fold (seen: up to 3.5e-3 px).
    """
    assert list(ours) == list(theirs), f"{what}: fields {list(ours)} vs insightface {list(theirs)}"
    for key, expected in theirs.items():
        got = ours[key]
        label = f"{what} {key}"
        if key == "embedding":
            a, b = np.asarray(got, np.float64), np.asarray(expected, np.float64)
            assert a.shape == b.shape, label
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), label
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 1 - 1e-6, label
        elif key in ("gender", "age"):
            assert int(got) == int(expected), label
        else:
            atol = {"det_score": 1e-5, "landmark_2d_106": 5e-3, "landmark_3d_68": 5e-3}.get(key, 1e-3)
            np.testing.assert_allclose(
                np.asarray(got, np.float64), np.asarray(expected, np.float64), atol=atol, err_msg=label
            )
