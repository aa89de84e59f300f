"""Head pose (pitch, yaw, roll in degrees) from 68 3D landmarks, as InsightFace computes it.

Method (InsightFace's ``Landmark`` model with ``1k3d68``): fit a 3D→3D affine map from a 68-point
3D *mean face shape* to the predicted landmarks by homogeneous least squares, split it into
scale and rotation (the first two rows normalised, the third their cross product), and read the
Euler angles ``pitch = atan2(R21, R22)``, ``yaw = atan2(-R20, sqrt(R00^2 + R10^2))``,
``roll = atan2(R10, R00)``, i.e. ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

The mean shape is data we do not ship. InsightFace distributes it as ``meanshape_68.pkl`` inside
its Python package, under its own terms, so facelab loads it at run time from a copy the user
installed, in this order:

1. the ``path`` argument of :func:`load_meanshape`;
2. the file named by the environment variable ``FACELAB_MEANSHAPE_68``;
3. ``insightface/data/objects/meanshape_68.pkl`` of an installed ``insightface`` package (found
   with :func:`importlib.util.find_spec`; insightface itself is not imported).

When none is available, pose is ``None`` and a one-time warning says how to enable it. The file
may be InsightFace's pickle (read by a restricted unpickler that only rebuilds numpy arrays),
a ``.npy`` file, or text with 68 rows of ``x y z``.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path

import numpy as np

from facelab.convert.safe_pickle import NUMPY_GLOBALS, restricted_loads
from facelab.errors import ConfigError, ModelError

__all__ = [
    "MEANSHAPE_ENV",
    "load_meanshape",
    "find_meanshape",
    "estimate_affine_3d",
    "decompose_affine_3d",
    "rotation_to_euler",
    "estimate_pose",
]

_logger = logging.getLogger(__name__)

#: Environment variable naming a 68-point 3D mean-shape file.
MEANSHAPE_ENV = "FACELAB_MEANSHAPE_68"

_CACHE: dict[str, np.ndarray] = {}
_warned = False


def _read_meanshape(path: Path) -> np.ndarray:
    data = path.read_bytes()
    try:
        if path.suffix == ".npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        elif path.suffix in (".pkl", ".pickle"):
            arr = restricted_loads(data, NUMPY_GLOBALS, str(path))
        else:
            arr = np.loadtxt(io.StringIO(data.decode("utf-8")))
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
        raise ModelError(f"{path}: not a readable 68x3 mean shape ({exc})") from exc
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape != (68, 3) or not np.isfinite(arr).all():
        raise ModelError(f"{path}: a mean shape must be a finite (68, 3) array, got shape {arr.shape}")
    return arr


def find_meanshape(path: str | os.PathLike | None = None) -> Path | None:
    """Locate the mean-shape file: ``path``, then ``$FACELAB_MEANSHAPE_68``, then an installed insightface.

    Returns:
        The file's path, or ``None`` when no source is available.

    Raises:
        ModelError: ``path`` or the environment variable names a file that does not exist.
    """
    for given, what in ((path, "path"), (os.environ.get(MEANSHAPE_ENV) or None, MEANSHAPE_ENV)):
        if given is not None:
            candidate = Path(given)
            if not candidate.is_file():
                raise ModelError(f"mean shape file given by {what} not found: {candidate}")
            return candidate
    from facelab.io.samples import package_dir

    folder = package_dir("insightface")
    candidate = None if folder is None else folder / "data" / "objects" / "meanshape_68.pkl"
    return candidate if candidate is not None and candidate.is_file() else None


def load_meanshape(path: str | os.PathLike | None = None) -> np.ndarray | None:
    """The 68-point 3D mean shape, or ``None`` (with a one-time warning) when none is installed.

    Args:
        path: an explicit file; otherwise see the module docstring for the search order.

    Returns:
        ``(68, 3)`` ``float32`` array (cached per file), or ``None``.

    Raises:
        ModelError: an explicitly named file is missing or unreadable.
    """
    global _warned
    found = find_meanshape(path)
    if found is None:
        if not _warned:
            _warned = True
            _logger.warning(
                "head pose disabled: no 68-point 3D mean shape found. Set %s to InsightFace's "
                "meanshape_68.pkl (or install the insightface package, which ships it), or pass "
                "its path, to enable pose estimation.",
                MEANSHAPE_ENV,
            )
        return None
    key = str(found.resolve())
    if key not in _CACHE:
        _CACHE[key] = _read_meanshape(found)
        _logger.info("loaded 68-point mean shape from %s", found)
    return _CACHE[key]


def estimate_affine_3d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 3D affine map ``dst ≈ P @ [src, 1]``.

    Args:
        src: ``(N, 3)`` fixed points (the mean shape).
        dst: ``(N, 3)`` moving points (the landmarks).

    Returns:
        ``(3, 4)`` ``float64`` matrix ``[A | t]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ConfigError(f"estimate_affine_3d needs two (N, 3) arrays of equal shape, got {src.shape} and {dst.shape}")
    homo = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(homo, dst, rcond=None)
    return solution.T


def decompose_affine_3d(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Split a ``(3, 4)`` affine camera matrix into scale, rotation and translation.

    The scale is the mean norm of the first two rows of the linear part; the rotation's first two
    rows are those rows normalised and its third row their cross product.

    Returns:
        ``(s, R, t)``: ``float`` scale, ``(3, 3)`` rotation, ``(3,)`` translation.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 4):
        raise ConfigError(f"expected a (3, 4) matrix, got {matrix.shape}")
    row1, row2 = matrix[0, :3], matrix[1, :3]
    n1, n2 = float(np.linalg.norm(row1)), float(np.linalg.norm(row2))
    if n1 == 0.0 or n2 == 0.0:
        raise ConfigError("degenerate affine matrix: a row of its linear part is zero")
    r1, r2 = row1 / n1, row2 / n2
    rotation = np.stack([r1, r2, np.cross(r1, r2)])
    return (n1 + n2) / 2.0, rotation, matrix[:, 3].copy()


def rotation_to_euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """Euler angles in degrees of ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

    Near gimbal lock (``sqrt(R00^2 + R10^2) < 1e-6``) roll is set to 0 and pitch taken from
    ``atan2(-R12, R11)``.

    Returns:
        ``(pitch, yaw, roll)`` in degrees.
    """
    r = np.asarray(rotation, dtype=np.float64)
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy >= 1e-6:
        x = math.atan2(r[2, 1], r[2, 2])
        z = math.atan2(r[1, 0], r[0, 0])
    else:
        x = math.atan2(-r[1, 2], r[1, 1])
        z = 0.0
    y = math.atan2(-r[2, 0], sy)
    return math.degrees(x), math.degrees(y), math.degrees(z)


def estimate_pose(landmarks: np.ndarray, meanshape: np.ndarray | None = None) -> np.ndarray | None:
    """Head pose from 68 3D landmarks.

    Args:
        landmarks: ``(68, 3)`` landmarks (``x, y`` image pixels, ``z`` in the same scale), as the
            ``landmark_3d_68`` runner returns them.
        meanshape: ``(68, 3)`` mean shape; default :func:`load_meanshape`.

    Returns:
        ``(3,)`` ``float32`` ``[pitch, yaw, roll]`` in degrees, or ``None`` when no mean shape is available.
    """
    lmk = np.asarray(landmarks)
    if lmk.shape != (68, 3):
        raise ConfigError(f"pose needs (68, 3) landmarks, got shape {lmk.shape}")
    if meanshape is None:
        meanshape = load_meanshape()
        if meanshape is None:
            return None
    _, rotation, _ = decompose_affine_3d(estimate_affine_3d(meanshape, lmk))
    return np.asarray(rotation_to_euler(rotation), dtype=np.float32)
