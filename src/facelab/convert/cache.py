"""Converted models cached in one folder (``$FACELAB_HOME/converted/``), each with its card.

Every converter stores its output the same way: ``<stem>.onnx`` and its card ``<stem>.json``
(the zoo's :class:`~facelab.zoo.card.ModelCard` as JSON), both written atomically, the card last.
A cached pair is reused while the card records the same source SHA-256 and converter version and
the ONNX file has the size the card gives; otherwise it is rebuilt. Cards are handled here as plain
dicts so that this layer does not import the zoo; callers turn them into ``ModelCard`` objects.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facelab.errors import ModelError, ModelNotFoundError

__all__ = ["atomic_write", "cached_conversion", "read_source"]

_logger = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_source(path: str | os.PathLike, what: str) -> tuple[bytes, str]:
    """Read a converter's source weight file whole (every reader and converter reads its input here).

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"dlib model file"``).

    Returns:
        ``(data, source)``: the bytes and the path as a string for messages.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelError: it cannot be read or is empty.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelNotFoundError(f"{what} not found: {file}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {what} {file}: {exc}") from exc
    if not data:
        raise ModelError(f"{file}: the file is empty, not a {what}")
    return data, str(file)


def _cached_card(card_path: Path, onnx_path: Path, source_sha: str, version: str) -> dict[str, Any] | None:
    if not (card_path.is_file() and onnx_path.is_file()):
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        extra = card.get("extra") or {}
        files = card.get("files") or []
        size = files[0].get("size_bytes") if files else None
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        _logger.warning("ignoring unreadable conversion card %s: %s", card_path, exc)
        return None
    if extra.get("source_sha256") != source_sha or extra.get("converter_version") != version:
        return None
    if size != onnx_path.stat().st_size:
        return None
    return card


def cached_conversion(
    folder: str | os.PathLike,
    stem: str,
    source_sha256: str,
    converter_version: str,
    build: Callable[[str], tuple[bytes, dict[str, Any]]],
) -> tuple[Path, dict[str, Any]]:
    """Return the cached conversion ``folder/<stem>.onnx`` and its card, rebuilding it when stale.

    Args:
        folder: the cache folder (converters use ``facelab_home(home) / "converted"``).
        stem: file stem.
        source_sha256: SHA-256 of the source weights.
        converter_version: the converter's version string.
        build: called with the ONNX file name; returns ``(onnx_bytes, card_dict)``. The card's
            ``extra`` must hold ``source_sha256`` and ``converter_version``, and its first entry of
            ``files`` the ONNX file's ``size_bytes``.

    Returns:
        ``(onnx_path, card_dict)``.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> card = {"extra": {"source_sha256": "ab", "converter_version": "1"}, "files": [{"size_bytes": 3}]}
        >>> path, got = cached_conversion(d, "m", "ab", "1", lambda name: (b"xyz", card))
        >>> path.read_bytes(), cached_conversion(d, "m", "ab", "1", lambda name: 1 / 0)[1] == card
        (b'xyz', True)
    """
    folder = Path(folder)
    onnx_path = folder / f"{stem}.onnx"
    card_path = folder / f"{stem}.json"
    card = _cached_card(card_path, onnx_path, source_sha256, converter_version)
    if card is not None:
        _logger.debug("using cached conversion %s", onnx_path)
        return onnx_path, card
    _logger.info("converting %s -> %s", stem, onnx_path)
    onnx_bytes, card = build(onnx_path.name)
    atomic_write(onnx_path, onnx_bytes)
    atomic_write(card_path, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return onnx_path, card
