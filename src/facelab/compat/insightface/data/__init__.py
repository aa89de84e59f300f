"""InsightFace's ``data``: ``get_image`` and ``get_object``, without bundled files.

InsightFace ships sample photos (``t1``, ``Tom_Hanks_54745``, ``mask_white`` ...) and the
68-point mean shape inside its package; facelab ships none of them. ``get_image(name)`` looks,
in order, for

1. ``name`` as a path to an image file;
2. ``<folder>/<name>.jpg|.png|.jpeg`` in each folder of the environment variable
   :data:`SAMPLE_IMAGES_ENV` (``os.pathsep``-separated);
3. the same file in an installed ``insightface`` package's ``data/images`` folder (found without
   importing it, for people moving their code over while it is still installed);

and otherwise raises :class:`~facelab.errors.ImageError` saying so and how to pass a path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ImageError, ModelNotFoundError
from facelab.io.samples import package_dir

__all__ = ["get_image", "get_object", "SAMPLE_IMAGES_ENV", "INSIGHTFACE_SAMPLES"]

#: Environment variable naming folders that hold InsightFace-style sample photos (``t1.jpg`` ...).
SAMPLE_IMAGES_ENV = "FACELAB_SAMPLE_IMAGES"

#: Names of the sample photos InsightFace's package bundles (facelab bundles none).
INSIGHTFACE_SAMPLES = ("t1", "Tom_Hanks_54745", "mask_white", "mask_blue", "mask_black", "mask_green")

_EXTENSIONS = (".jpg", ".png", ".jpeg")
_CACHE: dict[tuple[str, bool], np.ndarray] = {}


def _installed_insightface_dir(*parts: str) -> Path | None:
    root = package_dir("insightface")
    folder = None if root is None else root.joinpath("data", *parts)
    return folder if folder is not None and folder.is_dir() else None


def _find_image(name: str) -> Path | None:
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct
    folders = [Path(f).expanduser() for f in os.environ.get(SAMPLE_IMAGES_ENV, "").split(os.pathsep) if f]
    installed = _installed_insightface_dir("images")
    if installed is not None:
        folders.append(installed)
    for folder in folders:
        for ext in _EXTENSIONS:
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    return None


def get_image(name: str, to_rgb: bool = False, use_cache: bool = True) -> np.ndarray:
    """Read a sample photo by name (``"t1"``) or any image by path, as InsightFace's ``get_image``.

    Args:
        name: a sample name looked up as the module docstring says, or an image path.
        to_rgb: return RGB instead of BGR.
        use_cache: keep the decoded image for later calls (the same array is returned).

    Returns:
        ``(H, W, 3)`` ``uint8`` image, BGR (or RGB with ``to_rgb``), decoded with ``cv2.imread``.

    Raises:
        ImageError: no such sample or file (the message says how to provide one), or it cannot
            be decoded.
    """
    import cv2

    key = (str(name), bool(to_rgb))
    if use_cache and key in _CACHE:
        return _CACHE[key]
    path = _find_image(str(name))
    if path is None:
        raise ImageError(
            f"get_image({name!r}): facelab does not ship InsightFace's sample photos "
            f"({', '.join(INSIGHTFACE_SAMPLES)}). Pass the path of an image instead, e.g. "
            f"get_image('/path/to/{name}.jpg') or cv2.imread('/path/to/{name}.jpg'), or set "
            f"{SAMPLE_IMAGES_ENV} to a folder holding {name}.jpg (or .png/.jpeg)"
        )
    img = cv2.imread(str(path))
    if img is None:
        raise ImageError(f"get_image({name!r}): {path} is not a readable image")
    if to_rgb:
        img = img[:, :, ::-1]
    if use_cache:
        _CACHE[key] = img
    return img


def get_object(name: str) -> Any:
    """InsightFace's ``get_object``: only ``"meanshape_68.pkl"`` (the 68-point 3D mean face) is known.

    The file is found as :func:`facelab.alignment.pose.find_meanshape` finds it (``$FACELAB_MEANSHAPE_68``
    or an installed insightface package).

    Returns:
        ``(68, 3)`` ``float32`` array.

    Raises:
        ModelNotFoundError: another name, or no mean-shape file is installed.
    """
    from facelab.alignment.pose import MEANSHAPE_ENV, find_meanshape, load_meanshape

    if name != "meanshape_68.pkl":
        raise ModelNotFoundError(f"get_object({name!r}): facelab knows only 'meanshape_68.pkl'")
    path = find_meanshape()
    if path is None:
        raise ModelNotFoundError(
            f"get_object({name!r}): no 68-point mean shape installed; set {MEANSHAPE_ENV} to InsightFace's "
            "meanshape_68.pkl (or install the insightface package, which ships it)"
        )
    return load_meanshape(path)
