"""Compare face embeddings: cosine similarity, and its relation to InsightFace's squared L2 distance.

Embeddings are compared after L2 normalisation. For unit vectors ``a`` and ``b``,

    ``||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b = 2 - 2 cos(a, b)``,

so the squared Euclidean distance lies in ``[0, 4]`` (0 = same direction, 2 = orthogonal,
4 = opposite) and is a decreasing function of the cosine similarity in ``[-1, 1]``. InsightFace's
verification code (``eval/verification.py``) thresholds exactly this squared L2 distance of
normalised embeddings, so one of its distance thresholds ``t`` is the cosine threshold
``1 - t / 2`` (:func:`squared_l2_to_cosine`), and a cosine threshold ``c`` is the distance
threshold ``2 - 2c`` (:func:`cosine_to_squared_l2`). Thresholds depend on the model: compare
only embeddings made by the same recogniser (``Face.model``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from facelab.errors import ConfigError
from facelab.structures import Face

__all__ = [
    "compare",
    "similarity_matrix",
    "normalize",
    "cosine_to_squared_l2",
    "squared_l2_to_cosine",
    "resolve_threshold",
]

EmbeddingLike = Union[np.ndarray, Sequence[float], Face]


def _vector(value: EmbeddingLike) -> np.ndarray:
    if isinstance(value, Face):
        if value.embedding is None:
            raise ConfigError("this face has no embedding; run a recogniser on it first")
        value = value.embedding
    vec = np.asarray(value, dtype=np.float64).reshape(-1)
    if vec.size == 0:
        raise ConfigError("cannot compare an empty embedding")
    if not np.isfinite(vec).all():
        raise ConfigError("the embedding contains NaN or infinity")
    return vec


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalise embeddings along the last axis.

    Args:
        embeddings: ``(D,)`` or ``(N, D)`` array.

    Returns:
        ``float32`` array of the same shape; a zero vector stays zero.
    """
    arr = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return (arr / np.maximum(norms, 1e-12)).astype(np.float32)


def compare(a: EmbeddingLike, b: EmbeddingLike) -> float:
    """Cosine similarity of two embeddings (or of two faces' embeddings).

    Both are L2-normalised first, so raw (InsightFace ``Face.embedding``) and normalised
    embeddings give the same result.

    Args:
        a: ``(D,)`` embedding or a :class:`~facelab.structures.Face` with one.
        b: same, with the same ``D``.

    Returns:
        Similarity in ``[-1, 1]`` (1 = same direction); 0 if either vector is zero.

    Raises:
        ConfigError: a missing, empty or non-finite embedding, or different lengths.

    Example:
        >>> compare([1.0, 0.0], [1.0, 1.0])  # cos 45 degrees
        0.7071067811865475
    """
    va, vb = _vector(a), _vector(b)
    if va.shape != vb.shape:
        raise ConfigError(f"cannot compare embeddings of different lengths {va.size} and {vb.size}")
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(va, vb) / (na * nb), -1.0, 1.0))


def _matrix(values: np.ndarray | Sequence[EmbeddingLike]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None]
    else:
        items = list(values)
        arr = np.stack([_vector(v) for v in items]) if items else np.zeros((0, 0))
    if arr.ndim != 2:
        raise ConfigError(f"expected (N, D) embeddings, got shape {arr.shape}")
    return arr


def similarity_matrix(a: np.ndarray | Sequence[EmbeddingLike], b: np.ndarray | Sequence[EmbeddingLike]) -> np.ndarray:
    """Cosine similarity of every embedding in ``a`` with every one in ``b``.

    Args:
        a: ``(N, D)`` embeddings, or a sequence of embeddings / faces.
        b: ``(M, D)`` embeddings, or a sequence of embeddings / faces.

    Returns:
        ``(N, M)`` ``float32`` matrix; entry ``[i, j]`` equals ``compare(a[i], b[j])``.
    """
    ma, mb = _matrix(a), _matrix(b)
    if ma.shape[0] and mb.shape[0] and ma.shape[1] != mb.shape[1]:
        raise ConfigError(f"embedding lengths differ: {ma.shape[1]} and {mb.shape[1]}")
    if ma.shape[0] == 0 or mb.shape[0] == 0:
        return np.zeros((ma.shape[0], mb.shape[0]), np.float32)
    na = ma / np.maximum(np.linalg.norm(ma, axis=1, keepdims=True), 1e-300)
    nb = mb / np.maximum(np.linalg.norm(mb, axis=1, keepdims=True), 1e-300)
    return np.clip(na @ nb.T, -1.0, 1.0).astype(np.float32)


def cosine_to_squared_l2(cosine: float | np.ndarray) -> float | np.ndarray:
    """Squared L2 distance of unit vectors with cosine similarity ``cosine``: ``2 - 2 * cosine``.

    Example:
        >>> cosine_to_squared_l2(0.5)
        1.0
    """
    return (
        2.0 - 2.0 * np.asarray(cosine, dtype=np.float64)
        if isinstance(cosine, np.ndarray)
        else 2.0 - 2.0 * float(cosine)
    )


def squared_l2_to_cosine(distance: float | np.ndarray) -> float | np.ndarray:
    """Cosine similarity of unit vectors at squared L2 distance ``distance``: ``1 - distance / 2``.

    Example:
        >>> squared_l2_to_cosine(2.0)
        0.0
    """
    return (
        1.0 - np.asarray(distance, dtype=np.float64) / 2.0
        if isinstance(distance, np.ndarray)
        else 1.0 - float(distance) / 2.0
    )


def resolve_threshold(threshold: float | str | os.PathLike | None, card: Any = None) -> float | None:
    """The cosine "same person" threshold from an argument, a calibration file or a recogniser card.

    One rule for every user of a threshold (:class:`~facelab.pipeline.FaceAnalyzer`, the gallery,
    the CLI): accept a pair when ``similarity >= threshold``.

    Args:
        threshold: a number; or the path of a calibration JSON written by ``facelab eval
            calibrate`` (its ``"threshold"``, metric cosine); or ``None`` for the card's default.
        card: the recogniser's :class:`~facelab.zoo.card.ModelCard` (its
            ``extra["threshold_cosine"]``), or ``None``.

    Returns:
        The threshold, or ``None`` when neither an argument nor the card gives one.

    Raises:
        ConfigError: the file is missing, not JSON, has no numeric cosine ``threshold``, or the
            number is not finite.

    Example:
        >>> resolve_threshold(0.5), resolve_threshold(None)
        (0.5, None)
    """
    if threshold is None:
        value = card.extra.get("threshold_cosine") if card is not None else None
        return None if value is None else float(value)
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        if not np.isfinite(threshold):
            raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
        return float(threshold)
    path = Path(threshold)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("metric", "cosine") != "cosine":
            raise ConfigError(f"{path}: calibration metric {data.get('metric')!r} is not 'cosine'")
        return float(data["threshold"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not a calibration JSON with a cosine 'threshold': {exc}") from exc
