"""Landmark accuracy: normalised mean error (NME), cumulative error distribution (CED) and its AUC; iBUG ``.pts`` files.

Normalisations (the distance ``d`` each sample's mean point error is divided by):

* ``"inter_ocular"``: outer eye corners — 68 points: indices 36 and 45 (0-based iBUG order);
  5 points: the two eye points 0 and 1.
* ``"inter_pupil"``: eye centres — 68 points: mean of 36..41 and of 42..47; 5 points: 0 and 1.
* ``"box"``: ``sqrt(w * h)`` of the ground-truth points' bounding box.
* ``"diagonal"``: ``sqrt(w^2 + h^2)`` of that box.

106-point layouts differ between datasets, so eye-based normalisations need ``eye_indices`` for
them (two index groups, each averaged); ``"box"`` works for any number of points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facelab.errors import ConfigError

__all__ = ["NORMALIZATIONS", "read_pts", "write_pts", "normalizing_distance", "nme", "ced_curve", "ced_auc"]

#: Accepted ``norm`` values of :func:`nme`.
NORMALIZATIONS = ("inter_ocular", "inter_pupil", "box", "diagonal")

_EYES: dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]] = {
    ("inter_ocular", 68): ((36,), (45,)),
    ("inter_pupil", 68): (tuple(range(36, 42)), tuple(range(42, 48))),
    ("inter_ocular", 5): ((0,), (1,)),
    ("inter_pupil", 5): ((0,), (1,)),
}


def read_pts(path: str | os.PathLike, *, zero_based: bool = False) -> np.ndarray:
    """Read an iBUG ``.pts`` file (``version: 1``, ``n_points: N``, ``{``, ``x y`` lines, ``}``).

    Args:
        path: the file.
        zero_based: subtract 1 from every coordinate (iBUG annotations use MATLAB's 1-based pixels).

    Returns:
        ``(N, 2)`` ``float64`` ``x, y`` points.

    Raises:
        ConfigError: missing file, malformed content, or a point count that disagrees with ``n_points``.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such .pts file")
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    n_points = None
    try:
        start = lines.index("{")
        end = lines.index("}", start)
    except ValueError as exc:
        raise ConfigError(f"{p}: no '{{ ... }}' block of points") from exc
    for ln in lines[:start]:
        if ln.lower().startswith("n_points"):
            try:
                n_points = int(ln.split(":", 1)[1])
            except (IndexError, ValueError) as exc:
                raise ConfigError(f"{p}: bad n_points line {ln!r}") from exc
    try:
        pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start + 1 : end]], dtype=np.float64)
    except ValueError as exc:
        raise ConfigError(f"{p}: unreadable coordinate: {exc}") from exc
    pts = pts.reshape(-1, 2)
    if n_points is not None and len(pts) != n_points:
        raise ConfigError(f"{p}: n_points says {n_points} but {len(pts)} points are listed")
    return pts - 1.0 if zero_based else pts


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write ``(N, 2)`` points as an iBUG ``.pts`` file."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in pts)
    Path(path).write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def _as_batch(points: np.ndarray) -> np.ndarray:
    a = np.asarray(points, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[2] not in (2, 3):
        raise ConfigError(f"landmarks must be (N, 2) or (K, N, 2), got {np.shape(points)}")
    return a[..., :2]


def normalizing_distance(
    gt: np.ndarray, norm: str = "inter_ocular", eye_indices: tuple[Sequence[int], Sequence[int]] | None = None
) -> np.ndarray:
    """The per-sample distance NME divides by (see the module doc).

    Args:
        gt: ``(N, 2)`` or ``(K, N, 2)`` ground-truth points.
        norm: one of :data:`NORMALIZATIONS`.
        eye_indices: two index groups (left eye, right eye) for eye-based norms; required for
            layouts other than 5 and 68 points.

    Returns:
        ``(K,)`` distances.
    """
    g = _as_batch(gt)
    if norm in ("box", "diagonal"):
        w = g[:, :, 0].max(axis=1) - g[:, :, 0].min(axis=1)
        h = g[:, :, 1].max(axis=1) - g[:, :, 1].min(axis=1)
        return np.sqrt(w * h) if norm == "box" else np.sqrt(w * w + h * h)
    if norm not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalisation {norm!r}; use one of {NORMALIZATIONS}")
    groups = eye_indices if eye_indices is not None else _EYES.get((norm, g.shape[1]))
    if groups is None:
        raise ConfigError(
            f"{norm} normalisation for {g.shape[1]} points needs eye_indices=(left, right); or use norm='box'"
        )
    left = g[:, list(groups[0])].mean(axis=1)
    right = g[:, list(groups[1])].mean(axis=1)
    return np.linalg.norm(left - right, axis=1)


def nme(
    pred: np.ndarray,
    gt: np.ndarray,
    norm: str = "inter_ocular",
    *,
    eye_indices: tuple[Sequence[int], Sequence[int]] | None = None,
) -> np.ndarray:
    """Normalised mean error per sample: mean point-to-point distance divided by the normalising distance.

    Args:
        pred: ``(N, 2)`` or ``(K, N, 2)`` predicted points (a third ``z`` column is ignored).
        gt: ground truth of the same shape.
        norm: one of :data:`NORMALIZATIONS`.
        eye_indices: eye index groups for eye-based norms on other layouts.

    Returns:
        ``(K,)`` ``float64`` NME values (fractions, not percent).

    Example:
        >>> gt = np.zeros((5, 2)); gt[1] = [10, 0]
        >>> float(nme(gt + [1, 0], gt, "inter_pupil")[0])
        0.1
    """
    p, g = _as_batch(pred), _as_batch(gt)
    if p.shape != g.shape:
        raise ConfigError(f"prediction shape {p.shape} differs from ground truth {g.shape}")
    d = normalizing_distance(g, norm, eye_indices)
    if np.any(d <= 0):
        raise ConfigError("a normalising distance is zero (degenerate ground truth)")
    return np.linalg.norm(p - g, axis=2).mean(axis=1) / d


def ced_curve(
    errors: Sequence[float] | np.ndarray, max_error: float = 0.08, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: fraction of samples with error ``<= x`` for ``x`` in ``[0, max_error]``.

    Returns:
        ``(x, fraction)``, each ``(steps + 1,)``.
    """
    e = np.sort(np.asarray(errors, dtype=np.float64).reshape(-1))
    if len(e) == 0:
        raise ConfigError("no errors given")
    x = np.linspace(0.0, max_error, steps + 1)
    return x, np.searchsorted(e, x, side="right") / len(e)


def ced_auc(errors: Sequence[float] | np.ndarray, threshold: float = 0.08) -> tuple[float, float]:
    """Exact area under the CED curve up to ``threshold``, divided by ``threshold``, and the failure rate.

    The area of the step function ``F(x) = #{e <= x} / n`` from 0 to ``T`` is
    ``mean(max(0, T - e))``.

    Returns:
        ``(auc, failure_rate)``; the failure rate is the fraction of errors ``> threshold``.

    Example:
        >>> [round(v, 6) for v in ced_auc([0.02, 0.06, 0.1], threshold=0.08)]
        [0.333333, 0.333333]
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if len(e) == 0:
        raise ConfigError("no errors given")
    if threshold <= 0:
        raise ConfigError("threshold must be positive")
    auc = float(np.mean(np.maximum(0.0, threshold - e)) / threshold)
    return auc, float(np.mean(e > threshold))
