"""Decode images in background threads while the caller runs inference on earlier ones."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import ImageError
from facelab.io.image import load_image

__all__ = ["Decoded", "iter_decoded"]


@dataclass
class Decoded:
    """One input after decoding: ``image`` is ``(H, W, 3)`` ``uint8`` BGR, or ``None`` with ``error`` set."""

    path: Path
    image: np.ndarray | None
    error: str | None = None


def _decode(path: Path, max_pixels: int | None) -> Decoded:
    try:
        return Decoded(path, load_image(path, max_pixels=max_pixels))
    except ImageError as exc:
        return Decoded(path, None, str(exc))
    except MemoryError:
        return Decoded(path, None, f"{path}: out of memory while decoding")


def iter_decoded(
    paths: Iterable[Path], *, workers: int = 1, prefetch: int = 8, max_pixels: int | None = None
) -> Iterator[Decoded]:
    """Yield decoded images in input order, decoding up to ``prefetch`` ahead in ``workers`` threads.

    JPEG/PNG decoding releases the GIL, so one worker thread keeps a core busy decoding while
    ONNX Runtime uses the other. A file that cannot be decoded is yielded with ``error`` set
    instead of raising, so one bad file never stops a run.
    """
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="facelab-decode") as pool:
        pending: deque[Future[Decoded]] = deque()
        for path in paths:
            pending.append(pool.submit(_decode, Path(path), max_pixels))
            if len(pending) >= max(1, prefetch):
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(paths, None)
            if nxt is not None:
                pending.append(pool.submit(_decode, Path(nxt), max_pixels))
            yield result
