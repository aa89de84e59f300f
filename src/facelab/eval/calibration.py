"""Choose a similarity threshold for a target false-accept rate on the user's own labelled pairs.

The threshold follows the rule of :func:`facelab.eval.metrics.tar_at_far`: with the impostor
similarities sorted in descending order ``s_1 >= s_2 >= ...`` and ``k = floor(far * n)`` false
accepts allowed, a pair is accepted when ``score > s_{k+1}``. It is stored as the smallest float
above ``s_{k+1}``, so that the rule reads ``accept when score >= threshold`` for whoever loads
it. Bootstrap confidence intervals resample genuine and impostor pairs separately (seeded).

The JSON written by :func:`save_calibration` is small::

    {"metric": "cosine", "accept": "score >= threshold", "threshold": 0.41, "far": 0.001,
     "far_target": 0.001, "frr": 0.062, "ci": {...}, "pairs": {"genuine": 300, "impostor": 5000}}

:func:`load_calibration` returns the threshold.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = ["Calibration", "calibrate", "save_calibration", "load_calibration", "load_calibration_dict"]

_logger = logging.getLogger(__name__)


@dataclass
class Calibration:
    """A calibrated threshold.

    Attributes:
        threshold: accept a pair when its cosine similarity is ``>= threshold``.
        far_target: the requested false-accept rate.
        far: false-accept rate on the calibration pairs at ``threshold``.
        frr: false-reject rate on the calibration pairs at ``threshold``.
        n_genuine: genuine pairs used.
        n_impostor: impostor pairs used.
        ci: bootstrap intervals: ``{"level": 0.95, "n_boot": B, "seed": s, "threshold": [lo, hi],
            "far": [lo, hi], "frr": [lo, hi]}``; ``far``/``frr`` intervals are at the fixed
            calibrated threshold, the ``threshold`` interval re-calibrates each resample.
        metric: the score the threshold applies to (``"cosine"``).
    """

    threshold: float
    far_target: float
    far: float
    frr: float
    n_genuine: int
    n_impostor: int
    ci: dict[str, Any] = field(default_factory=dict)
    metric: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of :func:`save_calibration`."""
        return {
            "metric": self.metric,
            "accept": "score >= threshold",
            "threshold": self.threshold,
            "far_target": self.far_target,
            "far": self.far,
            "frr": self.frr,
            "ci": self.ci,
            "pairs": {"genuine": self.n_genuine, "impostor": self.n_impostor},
        }


def _threshold(imp_desc: np.ndarray, far_target: float) -> float:
    n = len(imp_desc)
    k = int(math.floor(far_target * n + 1e-9))
    if k >= n:
        return float(np.nextafter(float(imp_desc[-1]), -np.inf))  # everything accepted
    return float(np.nextafter(float(imp_desc[k]), np.inf))


def calibrate(
    scores: Sequence[float] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    far_target: float = 1e-3,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Calibration:
    """Threshold for ``far_target`` and the FRR it costs, with bootstrap confidence intervals.

    Args:
        scores: ``(N,)`` cosine similarities of labelled pairs.
        issame: ``(N,)`` genuine flags.
        far_target: false-accept rate to aim at, in ``(0, 1)``.
        n_boot: bootstrap resamples (0 disables the intervals).
        level: two-sided confidence level of the percentile intervals.
        seed: random seed of the resampling.

    Returns:
        The :class:`Calibration`.

    Raises:
        ConfigError: no genuine or impostor pairs, or fewer than ``1 / far_target`` impostors
            (that FAR cannot be measured on so few).

    Example:
        >>> c = calibrate([0.9, 0.5, 0.8, 0.4, 0.3, 0.2], [1, 1, 0, 0, 0, 0], far_target=0.25, n_boot=0)
        >>> round(c.threshold, 6), c.far, c.frr
        (0.4, 0.25, 0.0)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame).reshape(-1).astype(bool)
    if len(s) != len(y):
        raise ConfigError(f"{len(s)} scores for {len(y)} labels")
    if not 0 < far_target < 1:
        raise ConfigError(f"far_target must be in (0, 1), got {far_target}")
    gen = np.sort(s[y])
    imp = np.sort(s[~y])[::-1]
    if len(gen) == 0 or len(imp) == 0:
        raise ConfigError(f"calibration needs genuine and impostor pairs (got {len(gen)} and {len(imp)})")
    if far_target * len(imp) < 1 - 1e-9:
        raise ConfigError(
            f"insufficient impostors: FAR {far_target:g} needs at least {math.ceil(1 / far_target)} impostor pairs, "
            f"got {len(imp)}; add impostor pairs (identity folders sample them) or choose a larger FAR"
        )
    thr = _threshold(imp, far_target)
    far = float(np.sum(imp >= thr)) / len(imp)
    frr = float(np.sum(gen < thr)) / len(gen)
    ci: dict[str, Any] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        thrs, fars, frrs = np.empty(n_boot), np.empty(n_boot), np.empty(n_boot)
        for b in range(n_boot):
            g = gen[rng.integers(0, len(gen), len(gen))]
            i = imp[rng.integers(0, len(imp), len(imp))]
            thrs[b] = _threshold(np.sort(i)[::-1], far_target)
            fars[b] = np.mean(i >= thr)
            frrs[b] = np.mean(g < thr)
        lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
        ci = {
            "level": level,
            "n_boot": n_boot,
            "seed": seed,
            "threshold": np.percentile(thrs, [lo, hi]).tolist(),
            "far": np.percentile(fars, [lo, hi]).tolist(),
            "frr": np.percentile(frrs, [lo, hi]).tolist(),
        }
    _logger.info("calibrated threshold %.6f for FAR %g (FRR %.4f)", thr, far_target, frr)
    return Calibration(thr, float(far_target), far, frr, len(gen), len(imp), ci)


def save_calibration(calibration: Calibration, path: str | os.PathLike) -> None:
    """Write the calibration JSON."""
    Path(path).write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")


def load_calibration_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a calibration JSON; returns the whole dict.

    Raises:
        ConfigError: missing file, invalid JSON, no numeric ``threshold``, or a metric other
            than cosine.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such calibration file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not a calibration JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("threshold"), (int, float)):
        raise ConfigError(f"{p}: calibration JSON has no numeric 'threshold'")
    if data.get("metric", "cosine") != "cosine":
        raise ConfigError(f"{p}: calibration metric {data.get('metric')!r} is not supported (expected 'cosine')")
    return data


def load_calibration(path: str | os.PathLike) -> float:
    """Cosine-similarity threshold from a calibration JSON (accept when ``score >= threshold``)."""
    return float(load_calibration_dict(path)["threshold"])
