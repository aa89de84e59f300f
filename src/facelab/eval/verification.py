"""1:1 verification on pair lists with any embedder: InsightFace's 10-fold protocol plus ROC metrics.

Two embedder shapes are accepted, both framework-agnostic:

* ``embed(batch) -> (N, D)`` for **aligned** crops: ``batch`` is ``(N, H, W, 3)`` ``uint8`` BGR
  (``.bin`` files hold 112x112 aligned faces). With ``flip=True`` the embedding of each image is
  summed with the embedding of its horizontal mirror, as InsightFace's ``verification.py`` does.
* ``embed_image(image) -> (D,) | None`` for **photos** (CSV lists, LFW folders): the embedder
  finds the face itself (the CLI uses the largest, most central face); ``None`` means no face.
  A pair with a missing embedding gets cosine ``-1`` (squared-L2 distance 4), i.e. it is always
  rejected, and is counted in ``n_failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.eval.metrics import (
    DEFAULT_FARS,
    TarAtFar,
    eer,
    kfold_accuracy,
    roc_auc,
    tar_at_far,
    val_at_far_kfold,
)
from facelab.eval.pairs import PairSet

__all__ = [
    "EmbedFn",
    "ImageEmbedFn",
    "VerificationResult",
    "load_aligned",
    "embed_aligned",
    "embed_photos",
    "evaluate_embeddings",
    "evaluate_scores",
    "verify",
]

_logger = logging.getLogger(__name__)

#: ``(N, H, W, 3)`` uint8 BGR aligned crops → ``(N, D)`` embeddings.
EmbedFn = Callable[[np.ndarray], np.ndarray]
#: ``(H, W, 3)`` uint8 BGR photo → ``(D,)`` embedding of its main face, or ``None``.
ImageEmbedFn = Callable[[np.ndarray], "np.ndarray | None"]


def load_aligned(item: str | bytes | np.ndarray, image_size: int = 112) -> np.ndarray:
    """Decode an aligned crop and bring it to ``image_size`` square, as InsightFace's ``load_bin``.

    When the width differs from ``image_size`` the shorter side is resized to ``image_size``
    (bilinear, like MXNet's ``resize_short``) and the centre is cropped to a square.

    Returns:
        ``(image_size, image_size, 3)`` ``uint8`` BGR.
    """
    import cv2

    from facelab.io.image import load_image

    img = load_image(item)
    h, w = img.shape[:2]
    if w != image_size or h != image_size:
        if w != image_size:
            scale = image_size / min(h, w)
            nw, nh = max(image_size, int(round(w * scale))), max(image_size, int(round(h * scale)))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            h, w = img.shape[:2]
        y0, x0 = (h - image_size) // 2, (w - image_size) // 2
        img = np.ascontiguousarray(img[y0 : y0 + image_size, x0 : x0 + image_size])
    return img


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch")


def embed_aligned(
    items: Sequence[str | bytes | np.ndarray],
    embed: EmbedFn,
    *,
    flip: bool = True,
    batch_size: int = 64,
    image_size: int = 112,
    progress: bool = False,
) -> tuple[np.ndarray, float]:
    """Embed aligned crops in batches, optionally summing with the mirrored crop's embedding.

    Args:
        items: crops as paths, encoded bytes or arrays.
        embed: ``(B, S, S, 3)`` uint8 BGR → ``(B, D)``.
        flip: add the embedding of the horizontally flipped crop (InsightFace's "Accuracy-Flip").
        batch_size: crops per call.
        image_size: crop side ``S``.
        progress: show a progress bar.

    Returns:
        ``(embeddings, xnorm)``: ``(N, D)`` ``float64`` raw (un-normalised) embeddings and the
        mean L2 norm of the individual raw embeddings (InsightFace's XNorm).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    out: np.ndarray | None = None
    norm_sum, norm_count = 0.0, 0
    starts = range(0, len(items), batch_size)
    for start in _progress(starts, len(starts), "embedding", progress):
        batch = np.stack([load_aligned(x, image_size) for x in items[start : start + batch_size]])
        views = [batch, np.ascontiguousarray(batch[:, :, ::-1])] if flip else [batch]
        total = None
        for view in views:
            e = np.asarray(embed(view), dtype=np.float64)
            if e.ndim != 2 or len(e) != len(view):
                raise ConfigError(f"embed returned shape {e.shape} for a batch of {len(view)} crops; expected (N, D)")
            norm_sum += float(np.linalg.norm(e, axis=1).sum())
            norm_count += len(e)
            total = e if total is None else total + e
        assert total is not None
        if out is None:
            out = np.zeros((len(items), total.shape[1]), np.float64)
        out[start : start + len(batch)] = total
    if out is None:
        raise ConfigError("no images to embed")
    return out, norm_sum / max(norm_count, 1)


def embed_photos(
    items: Sequence[str | bytes | np.ndarray],
    embed_image: ImageEmbedFn,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Embed photos one by one with an embedder that finds the face itself.

    Returns:
        ``(N, D)`` ``float64``; rows of images without a face (``None``) are NaN.
    """
    from facelab.io.image import load_image

    rows: list[np.ndarray | None] = []
    dim = None
    for item in _progress(items, len(items), "embedding", progress):
        e = embed_image(load_image(item))
        if e is None:
            _logger.warning("no face found in %s", item if isinstance(item, str) else "<image>")
            rows.append(None)
            continue
        e = np.asarray(e, dtype=np.float64).reshape(-1)
        dim = len(e) if dim is None else dim
        if len(e) != dim:
            raise ConfigError(f"embedding sizes differ: {dim} vs {len(e)}")
        rows.append(e)
    if dim is None:
        raise ConfigError("no face was found in any image")
    out = np.full((len(items), dim), np.nan)
    for i, e in enumerate(rows):
        if e is not None:
            out[i] = e
    return out


@dataclass
class VerificationResult:
    """Verification metrics of one pair list.

    Attributes:
        n_pairs: pairs evaluated.
        n_genuine: genuine pairs.
        n_impostor: impostor pairs.
        n_failed: pairs where an image gave no embedding (scored as rejected).
        accuracy: mean 10-fold accuracy (InsightFace protocol, squared-L2 thresholds).
        accuracy_std: standard deviation over the folds.
        fold_accuracies: per-fold accuracies.
        best_threshold: squared-L2 threshold of best accuracy over all pairs.
        best_threshold_cosine: the same as a cosine similarity (``1 - t / 2``).
        auc: ROC AUC of the cosine scores (``None`` without both classes).
        eer: equal error rate (``None`` without both classes).
        eer_threshold: cosine threshold at the EER.
        tar_at_far: TAR at each target FAR (see :func:`facelab.eval.metrics.tar_at_far`).
        val: InsightFace VAL@FAR=1e-3 (mean over folds), with ``val_std`` and ``val_far``.
        xnorm: mean raw embedding norm (aligned inputs only).
        scores: ``(N,)`` cosine similarity of each pair.
        issame: ``(N,)`` genuine flags.
    """

    n_pairs: int
    n_genuine: int
    n_impostor: int
    n_failed: int
    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    best_threshold: float
    best_threshold_cosine: float
    auc: float | None
    eer: float | None
    eer_threshold: float | None
    tar_at_far: list[TarAtFar]
    val: float
    val_std: float
    val_far: float
    xnorm: float | None = None
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    issame: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def to_dict(self, *, include_scores: bool = False) -> dict[str, Any]:
        """JSON-safe dict: ``accuracy``, ``accuracy_std``, ``auc``, ``eer``, ``best_threshold``, ``tar_at_far``, ..."""
        out: dict[str, Any] = {
            "n_pairs": self.n_pairs,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "n_failed": self.n_failed,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "fold_accuracies": list(self.fold_accuracies),
            "best_threshold": self.best_threshold,
            "best_threshold_cosine": self.best_threshold_cosine,
            "threshold_metric": "squared_l2",
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "tar_at_far": {f"{t.far_target:g}": t.to_dict() for t in self.tar_at_far},
            "val_at_far_1e-3": {"val": self.val, "val_std": self.val_std, "far": self.val_far},
            "xnorm": self.xnorm,
        }
        if include_scores:
            out["scores"] = self.scores.tolist()
            out["issame"] = self.issame.astype(bool).tolist()
        return out


def evaluate_scores(
    scores: Sequence[float] | np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    *,
    n_folds: int = 10,
    folds: np.ndarray | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
    n_failed: int = 0,
    xnorm: float | None = None,
    distances: np.ndarray | None = None,
) -> VerificationResult:
    """All verification metrics from cosine similarities of unit embeddings.

    The k-fold accuracy works on ``distance = 2 - 2 * cosine`` (InsightFace's squared L2).

    Args:
        scores: ``(N,)`` cosine similarities.
        issame: ``(N,)`` genuine flags.
        n_folds: folds of the accuracy protocol (ignored when ``folds`` is given).
        folds: ``(N,)`` explicit fold numbers.
        fars: target FARs for TAR@FAR.
        n_failed: carried into the result.
        xnorm: carried into the result.
        distances: ``(N,)`` squared-L2 distances for the accuracy protocol (default
            ``2 - 2 * scores``); :func:`evaluate_embeddings` passes ``sum((e1 - e2) ** 2)`` as
            InsightFace computes it.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame, dtype=bool).reshape(-1)
    if len(s) != len(y):
        raise ConfigError(f"{len(s)} scores for {len(y)} labels")
    if len(s) == 0:
        raise ConfigError("no pairs to evaluate")
    dist = np.clip(2.0 - 2.0 * s, 0.0, 4.0) if distances is None else np.asarray(distances, np.float64).reshape(-1)
    kf = kfold_accuracy(dist, y, n_folds=n_folds if len(s) >= n_folds else 1, folds=folds)
    val, val_std, val_far = val_at_far_kfold(dist, y, 1e-3, n_folds=n_folds if len(s) >= n_folds else 1)
    both = y.any() and (~y).any()
    auc = roc_auc(y, s) if both else None
    e, e_thr = eer(y, s) if both else (None, None)
    tars = (
        tar_at_far(y, s, fars)
        if both
        else [TarAtFar(float(f), None, None, None, "needs genuine and impostor pairs") for f in fars]
    )
    return VerificationResult(
        n_pairs=len(s),
        n_genuine=int(y.sum()),
        n_impostor=int((~y).sum()),
        n_failed=n_failed,
        accuracy=kf.accuracy,
        accuracy_std=kf.accuracy_std,
        fold_accuracies=kf.fold_accuracies.tolist(),
        best_threshold=kf.best_threshold,
        best_threshold_cosine=1.0 - kf.best_threshold / 2.0,
        auc=auc,
        eer=e,
        eer_threshold=e_thr,
        tar_at_far=tars,
        val=val,
        val_std=val_std,
        val_far=val_far,
        xnorm=xnorm,
        scores=s,
        issame=y,
    )


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.maximum(norm, 1e-12)


def evaluate_embeddings(
    emb1: np.ndarray,
    emb2: np.ndarray,
    issame: Sequence[bool] | np.ndarray,
    **kwargs: Any,
) -> VerificationResult:
    """Verification metrics from the two embeddings of each pair.

    Args:
        emb1: ``(N, D)`` raw or unit embeddings of the first images (NaN rows = no face).
        emb2: ``(N, D)`` embeddings of the second images.
        issame: ``(N,)`` genuine flags.
        **kwargs: passed to :func:`evaluate_scores`.

    Returns:
        The :class:`VerificationResult`; embeddings are L2-normalised first.
    """
    a = np.asarray(emb1, dtype=np.float64)
    b = np.asarray(emb2, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ConfigError(f"embedding arrays must both be (N, D), got {a.shape} and {b.shape}")
    a, b = _normalize_rows(a), _normalize_rows(b)
    scores = np.sum(a * b, axis=1)
    dist = np.sum(np.square(a - b), axis=1)
    failed = ~np.isfinite(scores)
    scores[failed] = -1.0
    dist[failed] = 4.0
    kwargs.setdefault("n_failed", int(failed.sum()))
    kwargs.setdefault("distances", dist)
    return evaluate_scores(scores, issame, **kwargs)


def verify(
    pairs: PairSet,
    embed: EmbedFn | None = None,
    *,
    embed_image: ImageEmbedFn | None = None,
    flip: bool = True,
    batch_size: int = 64,
    image_size: int = 112,
    n_folds: int = 10,
    fars: Sequence[float] = DEFAULT_FARS,
    progress: bool = False,
) -> VerificationResult:
    """Embed every image of a pair list once and evaluate.

    Args:
        pairs: the :class:`~facelab.eval.pairs.PairSet`.
        embed: aligned-crop embedder (required when ``pairs.aligned``).
        embed_image: photo embedder (used for photo lists; when absent, photos are treated as
            aligned crops and passed to ``embed``).
        flip: flip test for aligned crops.
        batch_size: crops per ``embed`` call.
        image_size: aligned crop side.
        n_folds: accuracy folds when the list has none.
        fars: target FARs.
        progress: progress bar.

    Returns:
        The :class:`VerificationResult`.
    """
    xnorm = None
    if pairs.aligned or embed_image is None:
        if embed is None:
            raise ConfigError("verify needs an embed(batch) callable for aligned crops")
        emb, xnorm = embed_aligned(
            pairs.items, embed, flip=flip, batch_size=batch_size, image_size=image_size, progress=progress
        )
    else:
        emb = embed_photos(pairs.items, embed_image, progress=progress)
    return evaluate_embeddings(
        emb[pairs.pairs[:, 0]],
        emb[pairs.pairs[:, 1]],
        pairs.issame,
        n_folds=n_folds,
        folds=pairs.folds,
        fars=fars,
        xnorm=xnorm,
    )
