"""Verification on InsightFace ``.bin`` pair sets during training.

:func:`verify_bin` uses :func:`facelab.eval.verification.verify` (InsightFace's 10-fold
"Accuracy-Flip" protocol) with the backbone wrapped as an aligned-crop embedder. When
``facelab.eval`` is not available it falls back to the minimal local protocol below: a ``.bin``
is a pickle of ``(list of 2N encoded images, list of N issame booleans)``, pairs ``(2i, 2i + 1)``;
embeddings ``normalize(f(x) + f(flip(x)))``; accuracy = mean held-out accuracy of the best cosine
threshold of the other folds (10 folds, no shuffling).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from facelab.errors import ConfigError
from facelab.io.image import load_image
from facelab.ops.normalize import INSIGHTFACE_ARCFACE, Normalization
from facelab.train.data import normalize_batch

__all__ = ["load_bin", "embed", "embedder", "verification_accuracy", "verify_bin"]


def load_bin(path: str | Path, image_size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """``((2N, S, S, 3) uint8 BGR images, (N,) bool issame)`` from a ``.bin`` file."""
    import cv2

    with open(path, "rb") as fh:
        try:
            bins, issame = pickle.load(fh)  # noqa: S301 - trusted evaluation file named by the user
        except UnicodeDecodeError:
            fh.seek(0)
            bins, issame = pickle.load(fh, encoding="bytes")  # noqa: S301
    if len(bins) != 2 * len(issame):
        raise ConfigError(f"{path}: {len(bins)} images for {len(issame)} pairs")
    images = []
    for data in bins:
        img = load_image(bytes(data))
        if img.shape[:2] != (image_size, image_size):
            img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        images.append(img)
    return np.stack(images), np.asarray(issame, dtype=bool)


@torch.no_grad()
def embed(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 64, norm: Normalization = INSIGHTFACE_ARCFACE
) -> np.ndarray:
    """``(N, D)`` float32 L2-normalised ``f(x) + f(flip(x))`` for ``(N, S, S, 3)`` uint8 BGR images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = normalize_batch(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device), norm)
            feat = model(x) + model(x.flip(3))
            out.append(torch.nn.functional.normalize(feat.float()).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def verification_accuracy(emb: np.ndarray, issame: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean and std of held-out accuracy with the best cosine threshold per fold (no shuffling)."""
    sims = np.sum(emb[0::2] * emb[1::2], axis=1)
    n = len(sims)
    folds = max(1, min(folds, n))
    thresholds = np.arange(-1.0, 1.0, 0.005)
    idx = np.array_split(np.arange(n), folds)
    accs = []
    for k in range(folds):
        test = idx[k]
        train = np.setdiff1d(np.arange(n), test) if folds > 1 else test
        acc_train = [np.mean((sims[train] > t) == issame[train]) for t in thresholds]
        t = thresholds[int(np.argmax(acc_train))]
        accs.append(np.mean((sims[test] > t) == issame[test]))
    return float(np.mean(accs)), float(np.std(accs))


def embedder(model: torch.nn.Module, norm: Normalization = INSIGHTFACE_ARCFACE):  # noqa: ANN201
    """``embed(batch)`` callable: ``(N, S, S, 3)`` uint8 BGR → ``(N, D)`` float32 raw embeddings (eval mode)."""

    @torch.no_grad()
    def embed_batch(batch: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            x = normalize_batch(torch.from_numpy(np.ascontiguousarray(batch)).to(device), norm)
            return model(x).float().cpu().numpy()
        finally:
            model.train(was_training)

    return embed_batch


def verify_bin(
    model: torch.nn.Module, path: str | Path, image_size: int = 112, use_eval: bool = True
) -> dict[str, float]:
    """``{"acc", "std", "xnorm", "protocol"}`` of ``model`` on the ``.bin`` pair set ``path``.

    ``use_eval=False`` forces the local fallback protocol.
    """
    if use_eval:
        try:
            from facelab.eval.pairs import load_bin_pairs
            from facelab.eval.verification import verify
        except ImportError:
            use_eval = False
    if use_eval:
        res = verify(load_bin_pairs(path), embedder(model), flip=True, image_size=image_size)
        return {
            "acc": float(res.accuracy),
            "std": float(res.accuracy_std),
            "xnorm": float(res.xnorm or 0.0),
            "protocol": "facelab.eval",
        }
    images, issame = load_bin(path, image_size)
    acc, std = verification_accuracy(embed(model, images), issame)
    return {"acc": acc, "std": std, "protocol": "local"}
