"""Sample photos that ship inside other PyPI packages, addressed as ``sample:NAME``.

facelab ships no photos of its own. These public-domain pictures come with widely installed
packages, so ``facelab analyze sample:astronaut`` works offline on a fresh machine once the
package is installed (``pip install "facelab[demo]"`` installs scikit-image for it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from facelab.errors import ImageError

__all__ = ["SAMPLES", "SAMPLE_PREFIX", "sample_path", "package_dir"]

SAMPLE_PREFIX = "sample:"

#: name → (package, path inside the package, description).
SAMPLES: dict[str, tuple[str, str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png", "NASA portrait of astronaut Eileen Collins (public domain)"),
    "grace_hopper": (
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "US Navy portrait of Rear Admiral Grace Hopper (public domain)",
    ),
}


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (its ``__init__`` does not run).

    Args:
        package: the import name (``"skimage"``, ``"face_recognition_models"``, ``"mtcnn"``, ...).

    Returns:
        The package's folder (the first of a namespace package's), or ``None`` when it is not installed.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_path(name: str) -> Path:
    """Path of the sample photo ``name`` (with or without the ``sample:`` prefix).

    Raises:
        ImageError: unknown name, or the package that carries it is not installed (the message
            says which one to install).
    """
    key = name[len(SAMPLE_PREFIX) :] if name.startswith(SAMPLE_PREFIX) else name
    if key not in SAMPLES:
        raise ImageError(f"unknown sample image {key!r}; known: {', '.join(sorted(SAMPLES))}")
    package, relative, _ = SAMPLES[key]
    folder = package_dir(package)
    if folder is None:
        raise ImageError(f"sample image {key!r} ships with the {package} package: pip install {package}")
    path = folder / relative
    if not path.is_file():
        raise ImageError(f"sample image {key!r} not found at {path} (this {package} version lacks it)")
    return path
