"""Evaluation reports: JSON files, a short terminal table, and ROC / DET / score-histogram PNGs.

Plots need matplotlib (``pip install 'facelab[eval]'``); it is imported only when a plot is drawn.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = ["to_jsonable", "write_json", "format_table", "verification_rows", "plot_verification"]


def to_jsonable(value: Any) -> Any:
    """Convert numpy values, dataclass results (``to_dict``) and non-finite floats to JSON-safe values."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` (see :func:`to_jsonable`) as indented JSON, creating the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """A plain-text table with aligned columns (floats with 4 decimals).

    Example:
        >>> print(format_table([["accuracy", 0.99]], header=["metric", "value"]))
        metric    value
        --------  ------
        accuracy  0.9900
    """

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if math.isfinite(v) else "n/a"
        return "n/a" if v is None else str(v)

    table = [[cell(v) for v in r] for r in rows]
    if header is not None:
        table.insert(0, [str(h) for h in header])
    if not table:
        return ""
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(max(len(r) for r in table))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table]
    if header is not None:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verification_rows(result: Mapping[str, Any]) -> list[list[Any]]:
    """Rows ``[metric, value]`` of a verification result dict for :func:`format_table`."""
    acc = result.get("accuracy")
    std = result.get("accuracy_std")
    rows: list[list[Any]] = [
        ["pairs", f"{result.get('n_pairs')} ({result.get('n_genuine')} genuine, {result.get('n_impostor')} impostor)"],
        ["accuracy (10-fold)", f"{acc:.4f} ± {std:.4f}" if acc is not None and std is not None else None],
        [
            "best threshold (sq. L2 / cosine)",
            f"{result.get('best_threshold'):.2f} / {result.get('best_threshold_cosine'):.3f}",
        ],
        ["ROC AUC", result.get("auc")],
        ["EER", result.get("eer")],
    ]
    for far, t in (result.get("tar_at_far") or {}).items():
        rows.append([f"TAR @ FAR={far}", t["tar"] if t.get("status") == "ok" else t.get("status")])
    if result.get("n_failed"):
        rows.append(["pairs without a face", result["n_failed"]])
    return rows


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'facelab[eval]'") from exc
    return plt


def _save_curve(plt: Any, path: Path, far: np.ndarray, y: np.ndarray, ylabel: str, title: str, log_y: bool) -> None:
    """One ROC-style curve against the false accept rate (log x axis), saved as a PNG."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(far, y)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_verification(
    scores: np.ndarray, issame: np.ndarray, path: str | os.PathLike, *, title: str = "", threshold: float | None = None
) -> list[Path]:
    """Write ROC, DET and score-histogram PNGs.

    ``path`` names the ROC plot (``roc.png``); the DET and histogram plots are written beside it
    as ``roc_det.png`` and ``roc_hist.png``.

    Args:
        scores: ``(N,)`` cosine similarities.
        issame: ``(N,)`` genuine flags.
        path: output PNG path of the ROC curve.
        title: plot title.
        threshold: a cosine threshold to mark on the histogram.

    Returns:
        The three written paths.

    Raises:
        ConfigError: matplotlib is missing, or only one class is present.
    """
    from facelab.eval.metrics import roc_curve

    plt = _pyplot()
    y = np.asarray(issame, bool)
    s = np.asarray(scores, np.float64)
    if y.all() or (~y).all():
        raise ConfigError("ROC plots need genuine and impostor pairs")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out, out.with_name(out.stem + "_det.png"), out.with_name(out.stem + "_hist.png")]

    far = np.maximum(fpr, 1e-7)
    _save_curve(plt, paths[0], far, tpr, "true accept rate", title or "ROC", log_y=False)
    _save_curve(plt, paths[1], far, np.maximum(1 - tpr, 1e-7), "false reject rate", title or "DET", log_y=True)

    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(min(-0.2, s.min()), max(1.0, s.max()), 60)
    ax.hist(s[y], bins=bins, alpha=0.6, label="genuine")
    ax.hist(s[~y], bins=bins, alpha=0.6, label="impostor")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.legend()
    ax.set_title(title or "scores")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
