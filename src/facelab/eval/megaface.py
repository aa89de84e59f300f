"""MegaFace Challenge 1 scoring from features: rank-k identification (CMC) and TAR at FAR against distractors.

Protocol (FaceScrub probes): for every ordered pair ``(p, g)`` of two different images of the
same FaceScrub identity, ``g`` is put in a gallery with the ``N`` distractors; the rank of ``g``
for probe ``p`` is ``1 +`` the number of distractors scoring strictly higher than ``g``. Rank-k
is the fraction of pairs with rank ``<= k``. Verification: genuine pairs are the unordered
same-identity FaceScrub pairs, impostor pairs every probe with every distractor; TAR at FAR uses
the rule of :func:`facelab.eval.metrics.tar_at_far` (reported as insufficient when
``far * impostors < 1``). Distractor set ``N`` is the first ``N`` distractor rows unless
``subsets`` gives explicit indices (e.g. from the official ``megaface_features_list.json_N_1``).

Scores are cosine similarities of L2-normalised features, computed in distractor chunks, so
memory stays at ``probes x chunk``.
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

__all__ = ["DEFAULT_SIZES", "read_megaface_list", "evaluate_megaface"]

#: Distractor set sizes of MegaFace Challenge 1.
DEFAULT_SIZES = (10, 100, 1000, 10000, 100000, 1000000)


def read_megaface_list(path: str | os.PathLike) -> dict[str, list[Any]]:
    """Read an official MegaFace/FaceScrub JSON list (``{"path": [...], "id": [...]}``; ``id`` only for FaceScrub)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such list file") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not a JSON list: {exc}") from exc
    if not isinstance(data, dict) or "path" not in data:
        raise ConfigError(f"{p}: expected a JSON object with a 'path' list")
    return data


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate_megaface(
    probe_features: np.ndarray,
    probe_ids: Sequence[Any] | np.ndarray,
    distractor_features: np.ndarray,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    subsets: Mapping[int, np.ndarray] | None = None,
    ranks: Sequence[int] = tuple(range(1, 11)),
    fars: Sequence[float] = (1e-6,),
    chunk: int = 8192,
) -> dict[str, Any]:
    """MegaFace Challenge 1 identification and verification for each distractor set size.

    Args:
        probe_features: ``(P, D)`` FaceScrub features.
        probe_ids: ``(P,)`` identity of each probe.
        distractor_features: ``(M, D)`` distractor features (a ``np.load(..., mmap_mode="r")`` array works).
        sizes: distractor set sizes; sizes above ``M`` are skipped.
        subsets: optional ``{size: distractor row indices}``.
        ranks: CMC ranks.
        fars: verification FAR targets.
        chunk: distractors per block.

    Returns:
        ``{str(size): {"cmc": {k: rate}, "rank1": rate, "tar_at_far": {far: tar or "insufficient impostors"},
        "n_pairs": identification pairs, "n_distractors": N}}``.
    """
    probes = _unit(probe_features)
    ids = np.asarray(probe_ids)
    if len(ids) != len(probes):
        raise ConfigError(f"{len(probes)} probe features but {len(ids)} ids")
    sim_pp = probes @ probes.T
    same = ids[:, None] == ids[None, :]
    np.fill_diagonal(same, False)
    p_idx, g_idx = np.nonzero(same)
    pair_scores = sim_pp[p_idx, g_idx]
    genuine = sim_pp[np.triu(same, 1)]
    if len(pair_scores) == 0:
        raise ConfigError("no identity has two probe images")
    kmax = max(ranks)
    out: dict[str, Any] = {}
    for size in sizes:
        if subsets is not None and size in subsets:
            rows = np.asarray(subsets[size], np.int64)
        elif size <= len(distractor_features):
            rows = np.arange(size)
        else:
            continue
        n = len(rows)
        n_imp = n * len(probes)
        need = {f: int(math.floor(f * n_imp + 1e-9)) for f in fars}
        keep_imp = max(need.values()) + 1
        top = np.full((len(probes), kmax), -np.inf, np.float32)
        imp_top = np.zeros(0, np.float32)
        for s in range(0, n, chunk):
            block = _unit(distractor_features[rows[s : s + chunk]])
            sim = probes @ block.T
            both = np.concatenate([top, sim], axis=1)
            k = min(kmax, both.shape[1])
            top = -np.sort(-np.partition(both, both.shape[1] - k, axis=1)[:, -k:], axis=1)
            if top.shape[1] < kmax:
                top = np.pad(top, ((0, 0), (0, kmax - top.shape[1])), constant_values=-np.inf)
            cand = sim.ravel()
            if len(imp_top) >= keep_imp:
                cand = cand[cand > imp_top.min()]
            flat = np.concatenate([imp_top, cand])
            if len(flat) > keep_imp:
                flat = np.partition(flat, len(flat) - keep_imp)[-keep_imp:]
            imp_top = flat
        # rank <= k  <=>  fewer than k distractors score above s(p, g)  <=>  s(p, g) >= k-th best distractor
        kth = top[p_idx]  # (pairs, kmax) descending
        cmc = {str(k): float(np.mean(pair_scores >= kth[:, k - 1])) for k in ranks}
        imp_desc = np.sort(imp_top)[::-1]
        tars: dict[str, Any] = {}
        for f in fars:
            if f * n_imp < 1 - 1e-9:
                tars[f"{f:g}"] = "insufficient impostors"
                continue
            k = need[f]
            thr = imp_desc[k] if k < len(imp_desc) else -np.inf
            tars[f"{f:g}"] = float(np.mean(genuine > thr))
        out[str(size)] = {
            "cmc": cmc,
            "rank1": cmc.get("1"),
            "tar_at_far": tars,
            "n_pairs": int(len(pair_scores)),
            "n_distractors": n,
        }
    return out
