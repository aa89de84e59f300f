"""Decode images in background threads while the caller runs inference on earlier ones."""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import ImageError
from facelab.io.image import _decode, _max_pixels, load_image

__all__ = ["Decoded", "iter_decoded", "load_decoded"]


@dataclass
class Decoded:
    """One input after decoding: ``image`` is ``(H, W, 3)`` ``uint8`` BGR, or ``None`` with ``error`` set.

    With ``digest=True`` (see :func:`iter_decoded`) ``sha256`` is the file's content hash and
    ``stat`` its ``os.stat`` taken just before reading (``None`` when the file could not be read).
    """

    path: Path
    image: np.ndarray | None
    error: str | None = None
    sha256: str | None = None
    stat: os.stat_result | None = None


def _read(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The file's bytes and its ``os.stat`` taken just before reading, or ``None`` when it cannot be read."""
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            return fh.read(), st
    except OSError:
        return None


def load_decoded(path: Path, max_pixels: int | None = None, digest: bool = False) -> Decoded:
    """Decode one file into a :class:`Decoded` (never raises for a bad file; see :func:`iter_decoded`).

    With ``digest`` the file is read once: the hash and the image come from the same bytes.
    """
    read = _read(path) if digest else None
    sha, st = (hashlib.sha256(read[0]).hexdigest(), read[1]) if read is not None else (None, None)
    try:
        if read is not None and read[0]:
            image = _decode(io.BytesIO(read[0]), str(path), _max_pixels(max_pixels))
        else:  # load_image opens the file itself and names what is wrong with it
            image = load_image(path, max_pixels=max_pixels)
        return Decoded(path, image, sha256=sha, stat=st)
    except ImageError as exc:
        return Decoded(path, None, str(exc), sha, st)
    except MemoryError:
        return Decoded(path, None, f"{path}: out of memory while decoding", sha, st)


def iter_decoded(
    paths: Iterable[Path], *, workers: int = 1, prefetch: int = 8, max_pixels: int | None = None, digest: bool = False
) -> Iterator[Decoded]:
    """Yield decoded images in input order, decoding up to ``prefetch`` ahead in ``workers`` threads.

    JPEG/PNG decoding releases the GIL, so one worker thread keeps a core busy decoding while
    ONNX Runtime uses the other. A file that cannot be decoded is yielded with ``error`` set
    instead of raising, so one bad file never stops a run. ``digest=True`` also hashes each file
    (SHA-256) in the worker thread (the gallery's resumable indexing uses it).
    """
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="facelab-decode") as pool:
        pending: deque[Future[Decoded]] = deque()
        for path in paths:
            pending.append(pool.submit(load_decoded, Path(path), max_pixels, digest))
            if len(pending) >= max(1, prefetch):
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(paths, None)
            if nxt is not None:
                pending.append(pool.submit(load_decoded, Path(nxt), max_pixels, digest))
            yield result
