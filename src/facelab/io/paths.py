"""Expand command-line inputs (files, folders, glob patterns) into image paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from facelab.errors import ImageError
from facelab.io.samples import SAMPLE_PREFIX, sample_path

__all__ = ["IMAGE_SUFFIXES", "expand_image_inputs"]

#: File endings treated as images when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})


def expand_image_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Turn files, folders and glob patterns into a list of paths without repeats.

    Order: inputs in the order given; a folder's files and a pattern's matches sorted by name.
    A path reached twice (by absolute path, symlinks not followed) is kept at its first place.

    Files named explicitly are kept whatever their ending (a bad one is reported when it is
    decoded); folders contribute the files with an image ending (:data:`IMAGE_SUFFIXES`),
    recursively by default; patterns with ``*``, ``?`` or ``[`` are expanded with :mod:`glob`
    (``**`` allowed); ``sample:NAME`` names a sample photo shipped by another package
    (:mod:`facelab.io.samples`).

    Raises:
        ImageError: an input names nothing that exists (the message lists which).
    """
    found: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if text.startswith(SAMPLE_PREFIX) and not path.exists():
            found.append(sample_path(text))
        elif path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            found.extend(sorted(p for p in walker if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                missing.append(text)
            found.extend(files)
        else:
            missing.append(text)
    if missing:
        raise ImageError(f"no such file, folder or matching pattern: {', '.join(missing)}")
    seen: set[str] = set()
    unique = []
    for p in found:
        # The same path named twice (``DIR`` and ``DIR/*.jpg``) is analysed once; two different
        # names for one file (symlinks) are both kept, so every named input gets its result.
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
