"""Verification metrics on pair scores: k-fold accuracy, ROC, AUC, EER and TAR at FAR.

Conventions:

* ``labels`` are ``(N,)`` booleans (or 0/1): ``True`` for a genuine (same identity) pair.
* ``scores`` are ``(N,)`` similarities, **higher = more alike** (cosine similarity for
  embeddings). A pair is accepted when ``score > threshold`` in :func:`tar_at_far` and
  :func:`eer`'s threshold convention is the same "accept at or above the crossing score".
* ``distances`` (InsightFace's k-fold protocol) are squared L2 distances of unit embeddings,
  **lower = more alike**; a pair is predicted genuine when ``distance < threshold``. For unit
  vectors ``distance = 2 - 2 * cosine``.

The k-fold accuracy reproduces InsightFace's ``eval/verification.py`` exactly: thresholds
``np.arange(0, 4, 0.01)``, contiguous folds as scikit-learn's ``KFold(n_splits, shuffle=False)``
(the first ``N % k`` folds one pair larger), the first threshold of maximal accuracy on the other
folds, accuracy on the held-out fold, mean and (population) standard deviation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "DEFAULT_FARS",
    "KFoldResult",
    "kfold_splits",
    "insightface_thresholds",
    "kfold_accuracy",
    "val_at_far_kfold",
    "roc_curve",
    "roc_auc",
    "eer",
    "TarAtFar",
    "tar_at_far",
    "tar_at_far_closest",
]

_logger = logging.getLogger(__name__)

#: False-accept rates reported by default, from 1e-1 down to 1e-6.
DEFAULT_FARS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _labels_scores(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ConfigError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("labels must be booleans or 0/1")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ConfigError("scores contain NaN or infinity")
    return y, s


def kfold_splits(n: int, n_splits: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous ``(train, test)`` index splits, as scikit-learn's ``KFold(n_splits, shuffle=False)``.

    Args:
        n: number of pairs.
        n_splits: number of folds; ``1`` gives one split whose train and test sets are both
            everything (InsightFace's ``LFold`` with ``n_splits=1``).

    Returns:
        ``n_splits`` tuples of ``int64`` index arrays.

    Example:
        >>> [t.tolist() for _, t in kfold_splits(5, 2)]
        [[0, 1, 2], [3, 4]]
    """
    if n_splits < 1:
        raise ConfigError(f"n_splits must be >= 1, got {n_splits}")
    indices = np.arange(n, dtype=np.int64)
    if n_splits == 1:
        return [(indices, indices)]
    if n < n_splits:
        raise ConfigError(f"cannot split {n} pairs into {n_splits} folds")
    sizes = np.full(n_splits, n // n_splits, dtype=np.int64)
    sizes[: n % n_splits] += 1
    out = []
    start = 0
    for size in sizes:
        test = indices[start : start + size]
        train = np.concatenate([indices[:start], indices[start + size :]])
        out.append((train, test))
        start += size
    return out


def insightface_thresholds(step: float = 0.01) -> np.ndarray:
    """Squared-L2 thresholds ``np.arange(0, 4, step)`` (InsightFace uses 0.01 for accuracy, 0.001 for VAL)."""
    return np.arange(0, 4, step)


def _accuracy_per_threshold(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy of ``dist < t`` for every ``t`` (exact counts via sorting)."""
    gen = np.sort(dist[same])
    imp = np.sort(dist[~same])
    tp = np.searchsorted(gen, thresholds, side="left")  # genuine with dist < t
    tn = len(imp) - np.searchsorted(imp, thresholds, side="left")  # impostors with dist >= t
    return (tp + tn) / float(len(dist))


def _rates_per_threshold(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of ``dist < t`` for every ``t``; 0 where a class is empty (InsightFace's convention)."""
    gen = np.sort(dist[same])
    imp = np.sort(dist[~same])
    tp = np.searchsorted(gen, thresholds, side="left")
    fp = np.searchsorted(imp, thresholds, side="left")
    tpr = tp / len(gen) if len(gen) else np.zeros(len(thresholds))
    fpr = fp / len(imp) if len(imp) else np.zeros(len(thresholds))
    return tpr, fpr


@dataclass
class KFoldResult:
    """Result of :func:`kfold_accuracy`.

    Attributes:
        accuracy: mean held-out accuracy over the folds.
        accuracy_std: population standard deviation of the fold accuracies (``np.std``).
        fold_accuracies: ``(k,)`` held-out accuracy per fold.
        fold_thresholds: ``(k,)`` squared-L2 threshold chosen on each fold's training part.
        best_threshold: squared-L2 threshold of maximal accuracy over all pairs.
        tpr: ``(T,)`` mean over folds of the held-out TPR at each threshold.
        fpr: ``(T,)`` mean over folds of the held-out FPR at each threshold.
        thresholds: ``(T,)`` the squared-L2 thresholds used.
    """

    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    best_threshold: float
    tpr: np.ndarray = field(repr=False)
    fpr: np.ndarray = field(repr=False)
    thresholds: np.ndarray = field(repr=False)


def kfold_accuracy(
    distances: Sequence[float] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    n_folds: int = 10,
    thresholds: np.ndarray | None = None,
    folds: Sequence[int] | np.ndarray | None = None,
) -> KFoldResult:
    """InsightFace's k-fold verification accuracy on squared-L2 distances.

    For each fold, the threshold with the highest accuracy on the other folds (first one on
    ties, ``np.argmax``) is applied to the fold; a pair is predicted genuine when
    ``distance < threshold``.

    Args:
        distances: ``(N,)`` squared L2 distances of unit embeddings (lower = more alike).
        issame: ``(N,)`` genuine flags, in the order of the pair list (folds are contiguous).
        n_folds: number of folds (10 for LFW-style protocols).
        thresholds: candidate thresholds (default ``np.arange(0, 4, 0.01)``).
        folds: ``(N,)`` explicit fold number of each pair (e.g. from an LFW pairs file); when
            given, ``n_folds`` is ignored and each distinct value is one fold. LFW's file order
            makes both choices identical.

    Returns:
        The :class:`KFoldResult`.

    Example:
        >>> r = kfold_accuracy([0.1, 3.0, 0.2, 2.5], [True, False, True, False], n_folds=2)
        >>> r.accuracy, r.accuracy_std, r.fold_thresholds.tolist()
        (0.75, 0.25, [0.21, 0.11])
    """
    same, dist = _labels_scores(issame, distances)
    if thresholds is None:
        thresholds = insightface_thresholds(0.01)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if folds is not None:
        fold_ids = np.asarray(folds).reshape(-1)
        if fold_ids.shape != dist.shape:
            raise ConfigError("folds must have one entry per pair")
        everything = np.arange(len(dist))
        splits = [(everything[fold_ids != f], everything[fold_ids == f]) for f in np.unique(fold_ids)]
        if len(splits) == 1:
            splits = [(everything, everything)]
    else:
        splits = kfold_splits(len(dist), n_folds)
    acc = np.zeros(len(splits))
    fold_thr = np.zeros(len(splits))
    tprs = np.zeros((len(splits), len(thresholds)))
    fprs = np.zeros((len(splits), len(thresholds)))
    for k, (train, test) in enumerate(splits):
        train_acc = _accuracy_per_threshold(dist[train], same[train], thresholds)
        best = int(np.argmax(train_acc))
        fold_thr[k] = thresholds[best]
        tprs[k], fprs[k] = _rates_per_threshold(dist[test], same[test], thresholds)
        acc[k] = _accuracy_per_threshold(dist[test], same[test], thresholds[best : best + 1])[0]
    overall = _accuracy_per_threshold(dist, same, thresholds)
    return KFoldResult(
        accuracy=float(np.mean(acc)),
        accuracy_std=float(np.std(acc)),
        fold_accuracies=acc,
        fold_thresholds=fold_thr,
        best_threshold=float(thresholds[int(np.argmax(overall))]),
        tpr=tprs.mean(axis=0),
        fpr=fprs.mean(axis=0),
        thresholds=thresholds,
    )


def val_at_far_kfold(
    distances: Sequence[float] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    far_target: float = 1e-3,
    n_folds: int = 10,
    thresholds: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """InsightFace's VAL@FAR: threshold for ``far_target`` on the training folds, VAL and FAR on the held-out fold.

    InsightFace interpolates the threshold with ``scipy.interpolate.interp1d(far, thresholds,
    kind="slinear")``, which current SciPy refuses for the repeated FAR values that always occur.
    Here the interpolation is linear over the *first* threshold of each distinct training FAR
    value (``np.interp``); when the training FAR never reaches the target the threshold is 0,
    as in InsightFace.

    Args:
        distances: ``(N,)`` squared L2 distances.
        issame: ``(N,)`` genuine flags.
        far_target: the false-accept rate to aim at.
        n_folds: number of contiguous folds.
        thresholds: candidates (default ``np.arange(0, 4, 0.001)``).

    Returns:
        ``(val_mean, val_std, far_mean)`` over the folds.
    """
    same, dist = _labels_scores(issame, distances)
    if thresholds is None:
        thresholds = insightface_thresholds(0.001)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    vals, fars = [], []
    for train, test in kfold_splits(len(dist), n_folds):
        _, far_train = _rates_per_threshold(dist[train], same[train], thresholds)
        if far_train.max() >= far_target:
            uniq, first = np.unique(far_train, return_index=True)
            threshold = float(np.interp(far_target, uniq, thresholds[first]))
        else:
            threshold = 0.0
        n_same = int(same[test].sum())
        n_diff = int((~same[test]).sum())
        accept = dist[test] < threshold
        vals.append(float((accept & same[test]).sum()) / n_same if n_same else 0.0)
        fars.append(float((accept & ~same[test]).sum()) / n_diff if n_diff else 0.0)
    return float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars))


def roc_curve(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with scikit-learn's ``roc_curve`` semantics (used by InsightFace's IJB evaluation).

    Scores are sorted in descending order (stable); each distinct score is a threshold
    (``score >= threshold`` accepted). With ``drop_intermediate`` the points whose second
    differences of both the FP and TP counts are zero are dropped, as scikit-learn does. A first
    point ``(0, 0)`` with threshold ``+inf`` is prepended.

    Args:
        labels: ``(N,)`` genuine flags.
        scores: ``(N,)`` similarities (higher = more alike).
        drop_intermediate: drop collinear points (scikit-learn's default ``True``).

    Returns:
        ``(fpr, tpr, thresholds)``, ``float64`` arrays of equal length; ``fpr`` is NaN when there
        is no impostor, ``tpr`` NaN when there is no genuine pair.

    Example:
        >>> fpr, tpr, thr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y, s = _labels_scores(labels, scores)
    order = np.argsort(s, kind="mergesort")[::-1]
    s = s[order]
    y = y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, len(s) - 1]
    tps = np.cumsum(y, dtype=np.float64)[idx]
    fps = 1 + idx - tps
    thresholds = s[idx]
    if drop_intermediate and len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def _need_both(y: np.ndarray) -> tuple[int, int]:
    n_gen = int(y.sum())
    n_imp = int(len(y) - n_gen)
    if n_gen == 0 or n_imp == 0:
        raise ConfigError(f"need both genuine and impostor pairs (got {n_gen} genuine, {n_imp} impostor)")
    return n_gen, n_imp


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: ``P(genuine > impostor) + 0.5 * P(genuine == impostor)``.

    Computed from average ranks (Mann-Whitney U); equal to the trapezoidal area under the full
    ROC curve.

    Raises:
        ConfigError: no genuine or no impostor pair.

    Example:
        >>> roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
        0.75
    """
    y, s = _labels_scores(labels, scores)
    n_gen, n_imp = _need_both(y)
    uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = float(avg_rank[inverse][y].sum())
    return (rank_sum - n_gen * (n_gen + 1) / 2.0) / (n_gen * n_imp)


def eer(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    For each distinct score ``t`` (plus ``+inf``), ``FAR(t)`` is the fraction of impostors with
    ``score >= t`` and ``FRR(t)`` the fraction of genuine pairs with ``score < t``. Going up in
    ``t``, FRR - FAR rises through zero; the EER is where the two piecewise-linear curves cross
    between the last point with ``FRR < FAR`` and the first with ``FRR >= FAR`` (exactly that
    point's rate when they are equal there).

    Returns:
        ``(eer, threshold)``; the threshold is interpolated linearly between the two scores.

    Raises:
        ConfigError: no genuine or no impostor pair.

    Example:
        >>> eer([1, 1, 1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.85, 0.6, 0.2, 0.1])
        (0.25, 0.7)
    """
    y, s = _labels_scores(labels, scores)
    n_gen, n_imp = _need_both(y)
    t = np.r_[np.unique(s), np.inf]
    gen = np.sort(s[y])
    imp = np.sort(s[~y])
    frr = np.searchsorted(gen, t, side="left") / n_gen
    far = (n_imp - np.searchsorted(imp, t, side="left")) / n_imp
    diff = frr - far
    i = int(np.argmax(diff >= 0))  # diff[-1] = 1 >= 0, so i exists
    if diff[i] == 0 or i == 0:
        return float(far[i]), float(t[i])
    d0, d1 = diff[i - 1], diff[i]
    a = -d0 / (d1 - d0)
    rate = far[i - 1] + a * (far[i] - far[i - 1])
    hi = t[i] if np.isfinite(t[i]) else t[i - 1]
    thr = t[i - 1] + a * (hi - t[i - 1])
    return float(rate), float(thr)


@dataclass
class TarAtFar:
    """TAR at one target FAR.

    Attributes:
        far_target: the requested false-accept rate.
        tar: true-accept rate at the threshold, or ``None`` when ``status`` is not ``"ok"``.
        threshold: accept when ``score > threshold``; ``None`` when not measurable.
        far: the false-accept rate actually reached (``<= far_target``).
        status: ``"ok"`` or ``"insufficient impostors"`` (fewer than ``1 / far_target`` impostor
            pairs, so that FAR cannot be measured).
    """

    far_target: float
    tar: float | None
    threshold: float | None
    far: float | None
    status: str = "ok"

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-safe dict."""
        return {
            "far_target": self.far_target,
            "tar": self.tar,
            "threshold": self.threshold,
            "far": self.far,
            "status": self.status,
        }


def tar_at_far(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
) -> list[TarAtFar]:
    """True-accept rate at each target false-accept rate, without interpolation.

    With ``n`` impostor scores sorted in descending order ``s_1 >= s_2 >= ...``, the number of
    false accepts allowed is ``k = floor(far * n)``; the threshold is ``s_{k+1}`` and a pair is
    accepted when ``score > threshold``, so the reached FAR never exceeds the target (ties make it
    lower). A target with ``far * n < 1`` is reported as ``"insufficient impostors"``.

    Raises:
        ConfigError: no genuine or no impostor pair.

    Example:
        >>> r = tar_at_far([1, 1, 0, 0, 0, 0], [0.9, 0.5, 0.8, 0.4, 0.3, 0.2], fars=[0.25, 0.1])
        >>> (r[0].tar, r[0].threshold, r[0].far), r[1].status
        ((1.0, 0.4, 0.25), 'insufficient impostors')
    """
    y, s = _labels_scores(labels, scores)
    n_gen, n_imp = _need_both(y)
    imp = np.sort(s[~y])[::-1]
    gen = np.sort(s[y])
    out = []
    for target in fars:
        target = float(target)
        if not 0 < target <= 1:
            raise ConfigError(f"FAR targets must be in (0, 1], got {target}")
        if target * n_imp < 1 - 1e-9:
            out.append(TarAtFar(target, None, None, None, "insufficient impostors"))
            continue
        k = int(math.floor(target * n_imp + 1e-9))
        if k >= n_imp:
            threshold = -np.inf
        else:
            threshold = float(imp[k])
        tar = float(len(gen) - np.searchsorted(gen, threshold, side="right")) / n_gen
        fa = float(n_imp - np.searchsorted(imp[::-1], threshold, side="right")) / n_imp
        out.append(TarAtFar(target, tar, float(threshold), fa))
    return out


def tar_at_far_closest(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[float, float]:
    """InsightFace's IJB TAR@FAR: the TPR of the ROC point whose FPR is closest to each target.

    Uses :func:`roc_curve` with ``drop_intermediate=True`` and ``argmin |fpr - far|`` (first on
    ties), exactly as ``eval_ijbc.py`` does with scikit-learn.

    Returns:
        ``{far: tar}``.

    Example:
        >>> tar_at_far_closest([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], fars=[0.4])
        {0.4: 0.5}
    """
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    out = {}
    for far in fars:
        i = int(np.argmin(np.abs(fpr - float(far))))
        out[float(far)] = float(tpr[i])
    return out
