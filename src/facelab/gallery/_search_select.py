"""Exact top-k selection over score matrices, by vector and by group (person).

The search backends produce score blocks of shape ``(rows, queries)``: higher is better, ``float32``
(FP32/FP16 dot products) or ``int32`` (INT8 integer dots, whose order is the order of the unclipped
score). Selecting the top ``k`` of a million scores per query with ``argpartition`` costs about as
much as a sixth of the FP32 scan itself, so selection works in two steps that stay exact:

1. A **threshold** per query from a *sample* of rows (every ``step``-th row): the k-th largest
   sample score (vectors), or the score at which the sample has seen ``k`` distinct groups
   (groups). The sample rows are rows of the index, so at least ``k`` rows (``k`` groups) of the
   full index score at or above it: the true top ``k`` all lie at or above the threshold, ties
   included.
2. While the full scan runs block by block, only the scores ``>= threshold`` are kept
   (:func:`candidates`): a few hundred per query. The final order is computed on them alone
   (:func:`top_vectors`, :func:`top_groups`): score descending, then vector id ascending; a group
   scores the max over its vectors, its best vector is the lowest id among the vectors at that
   max, and groups order by score descending, then group id ascending (InsightFace Server's rule).

A query whose sample holds fewer than ``k`` distinct groups gets the lowest possible threshold:
every row is a candidate (still exact, slower; it happens only for indexes with very few groups),
and each block keeps only its best candidate per group (:func:`best_per_group`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "lowest",
    "sample_step",
    "vector_thresholds",
    "group_thresholds",
    "candidates",
    "top_vectors",
    "best_per_group",
    "top_groups",
]

#: Rows of the score block the full scan produces at a time (``rows × queries`` scores stay in cache).
BLOCK_ROWS = 32768
#: Sample one row in this many for the thresholds (at most; fewer for small indexes or large k).
MAX_SAMPLE_STEP = 64


def lowest(dtype: np.dtype) -> np.generic:
    """The lowest value of a score dtype: a threshold that lets every score through."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(-np.inf)
    return dtype.type(np.iinfo(dtype).min)


def sample_step(n: int, k: int) -> int:
    """Take every ``step``-th row for the thresholds: 1 (all rows) for an index that fits one block.

    The sample keeps at least ``16 k`` rows, so the threshold is tight: about ``k × step`` rows
    pass it per query.
    """
    if n <= BLOCK_ROWS:
        return 1
    return int(max(1, min(MAX_SAMPLE_STEP, n // (16 * k))))


def vector_thresholds(sample: np.ndarray, k: int) -> np.ndarray:
    """The k-th largest score of each column of ``sample`` ``(m, q)``; shape ``(q,)``, its dtype."""
    m = sample.shape[0]
    if k >= m:
        return np.full(sample.shape[1], lowest(sample.dtype), sample.dtype)
    return np.partition(sample, m - k, axis=0)[m - k].astype(sample.dtype, copy=False)


def group_thresholds(sample: np.ndarray, sample_groups: np.ndarray, k: int) -> np.ndarray:
    """Per column of ``sample`` ``(m, q)``: the highest score at which ``k`` distinct groups are reached.

    Args:
        sample: sample scores ``(m, q)``.
        sample_groups: group of each sample row ``(m,)`` int64.
        k: groups wanted.

    Returns:
        ``(q,)`` thresholds of the sample's dtype; :func:`lowest` where the sample holds fewer than
        ``k`` distinct groups.
    """
    m, q = sample.shape
    out = np.full(q, lowest(sample.dtype), sample.dtype)
    if m == 0:
        return out
    head = min(m, 4 * k)
    top = (
        np.argpartition(sample, m - head, axis=0)[m - head :]
        if head < m
        else np.broadcast_to(np.arange(m)[:, None], (m, q))
    )
    for j in range(q):
        for rows in (top[:, j], None):
            if rows is None:  # the head of the sample was not enough: the whole column
                if head >= m:
                    break
                rows = np.arange(m)
            values = sample[rows, j]
            order = np.argsort(-values.astype(np.float64), kind="stable")
            _, first = np.unique(sample_groups[rows[order]], return_index=True)
            if len(first) >= k:
                out[j] = values[order[np.sort(first)[k - 1]]]
                break
    return out


def candidates(block: np.ndarray, thresholds: np.ndarray, row0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scores of ``block`` ``(b, q)`` at or above their column's threshold.

    Returns:
        ``(rows, cols, values)``: index rows (offset by ``row0``) int64, query columns intp, scores.
    """
    q = block.shape[1]
    flat = np.flatnonzero(block >= thresholds)
    rows, cols = np.divmod(flat, q)
    return rows + row0, cols, block.reshape(-1)[flat]


def _first_per_column(cols_sorted: np.ndarray, q: int, k: int) -> list[np.ndarray]:
    """Positions of the first ``k`` entries of each column in a column-sorted candidate list."""
    starts = np.searchsorted(cols_sorted, np.arange(q + 1))
    return [np.arange(starts[j], min(starts[j] + k, starts[j + 1])) for j in range(q)]


def top_vectors(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ids: np.ndarray, q: int, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Order candidates per query: score descending, then vector id ascending; keep ``k``.

    Args:
        rows: candidate index rows (from :func:`candidates`, concatenated over blocks).
        cols: their query columns.
        values: their scores.
        ids: vector id of each index row.
        q: number of queries.
        k: hits per query.

    Returns:
        Per query ``(rows, values)`` of its hits, best first.
    """
    order = np.lexsort((ids[rows], -values.astype(np.float64), cols))
    rows, cols, values = rows[order], cols[order], values[order]
    return [(rows[p], values[p]) for p in _first_per_column(cols, q, k)]


def best_per_group(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ids: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep, per (query, group), the candidate with the highest score, then the lowest vector id.

    Applied per block it bounds the candidates of a query whose threshold lets every row through
    (an index with fewer than ``k`` groups in its sample) to one per group.

    Returns:
        ``(rows, cols, values)`` of the kept candidates, sorted by column then group.
    """
    cand_groups = groups[rows]
    order = np.lexsort((ids[rows], -values.astype(np.float64), cand_groups, cols))
    rows, cols, values, cand_groups = rows[order], cols[order], values[order], cand_groups[order]
    head = np.ones(len(rows), bool)
    head[1:] = (cols[1:] != cols[:-1]) | (cand_groups[1:] != cand_groups[:-1])
    return rows[head], cols[head], values[head]


def top_groups(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ids: np.ndarray, groups: np.ndarray, q: int, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best vector per group among the candidates, then the top ``k`` groups per query.

    A group's score is the max over its candidate vectors (the threshold keeps every vector at a
    listed group's max); its best vector is the lowest id at that max; groups order by score
    descending, then group id ascending.

    Returns:
        Per query ``(rows, values)``: the row of each group's best vector and the group score.
    """
    rows, cols, values = best_per_group(rows, cols, values, ids, groups)
    order = np.lexsort((groups[rows], -values.astype(np.float64), cols))
    rows, cols, values = rows[order], cols[order], values[order]
    return [(rows[p], values[p]) for p in _first_per_column(cols, q, k)]
