"""The one way tests reach ``../shared`` (real images, real models, ground truth).

``shared_file("data/images/t1.jpg")`` returns the path, or skips the test with a clear reason
when the file is absent. With ``FACELAB_REQUIRE_FIXTURES=1`` (set by ``.ci/run``) a missing
fixture fails the test instead. ``FACELAB_SHARED`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared"


def shared_root() -> Path:
    """The shared folder (``$FACELAB_SHARED`` or ``../shared`` beside the checkout)."""
    return Path(os.environ.get("FACELAB_SHARED", _DEFAULT))


def _missing(what: str) -> None:
    message = f"fixture {what} not found under {shared_root()} (set FACELAB_SHARED or check out ../shared)"
    if os.environ.get("FACELAB_REQUIRE_FIXTURES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def shared_file(relative: str) -> Path:
    """Path of a file or folder under the shared folder; skip (or fail in CI) when absent."""
    path = shared_root() / relative
    if not path.exists():
        _missing(relative)
    return path


def require_module(name: str) -> object:
    """Import an optional test-only module (e.g. the ``insightface`` oracle); skip or fail when absent."""
    try:
        return __import__(name)
    except ImportError as exc:
        message = f"test needs the module {name!r}: {exc}"
        if os.environ.get("FACELAB_REQUIRE_FIXTURES") == "1":
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)


def missing_dependency(message: str) -> None:
    """Skip for a missing test dependency, or fail under ``FACELAB_REQUIRE_FIXTURES=1`` (CI)."""
    if os.environ.get("FACELAB_REQUIRE_FIXTURES") == "1":
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)
