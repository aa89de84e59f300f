"""k-nearest-neighbour graphs over L2-normalised face embeddings, exact or approximate.

Every clustering algorithm of :mod:`facelab.gallery.cluster` reads one :class:`KnnGraph`: for each
face its ``k`` most similar other faces (cosine similarity, best first). The graph comes from a
neighbour index (:data:`NEIGHBOR_INDEXES`):

* ``"exact"`` (default, NumPy only): chunked ``float32`` matrix products, ``queries × base`` blocks
  of ``1024 × 32768``. Selection stays exact and cheap: each block row is cut into groups of up
  to 32 columns, the top ``k`` group maxima name the only ``k`` groups that can hold the row's top
  ``k`` (a group outside them has ``k`` larger elements before it), and ``argpartition`` runs on
  those ``32 k`` values only (:func:`_block_topk`). Cost ``2 N² D`` flops: 100k × 512 is about
  10¹³ (a minute or two on two cores at 100–170 GFLOP/s); 1M × 512 is 10¹⁵ (hours): use an ANN
  index there.
* ``"ivf"`` (NumPy only, approximate): k-means cells on the centred rows, each query compared
  with the rows of its ``nprobe`` nearest cells by matrix products (:class:`IVFNeighbors`);
  ``2 · nprobe · cell_size · D`` flops per face, the 1M-face graph in minutes.
* ``"faiss"`` (``pip install faiss-cpu``): an inverted-file index (``IndexIVFFlat`` on inner
  products), ``nlist ≈ 4 sqrt(N)`` cells trained on a sample, ``nprobe`` cells searched per query.
  Its k-means runs on the raw rows, and face embeddings share one direction, so a few cells hold
  most faces: on 20k synthetic faces it was slower than exact search (see the benchmark).
* ``"usearch"`` (``pip install usearch``): an HNSW graph (cosine metric, ``connectivity`` 16,
  ``expansion_add`` 128, ``expansion_search`` 64 — usearch's defaults); it found only 67 % of the
  close neighbours on the same faces.

An approximate graph reports its recall@k against exact search on a random sample of faces
(:func:`graph_recall`, also restricted to the close neighbours a clustering uses), stored in
:attr:`KnnGraph.recall`. ``backend="auto"`` picks exact up to :data:`AUTO_EXACT_MAX` faces, then
``"ivf"``.

Example:
    >>> import numpy as np
    >>> x = np.eye(3, 4, dtype=np.float32) + 0.1
    >>> g = build_knn(x, k=2)
    >>> g.indices.shape, g.sims.dtype.name
    ((3, 2), 'float32')
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "KnnGraph",
    "NeighborIndex",
    "NEIGHBOR_INDEXES",
    "AUTO_EXACT_MAX",
    "ExactNeighbors",
    "IVFNeighbors",
    "FaissIVFNeighbors",
    "UsearchNeighbors",
    "normalize_rows",
    "make_neighbor_index",
    "build_knn",
    "exact_search",
    "graph_recall",
]

_logger = logging.getLogger(__name__)

#: Neighbour index kinds for :func:`make_neighbor_index`; each is a class ``(dim, **options)``.
NEIGHBOR_INDEXES: Registry = Registry("neighbour index")
#: ``backend="auto"`` uses exact search up to this many faces.
AUTO_EXACT_MAX = 200_000
#: Query rows and base rows per exact block (``1024 × 32768`` float32 scores = 128 MiB).
QUERY_BLOCK = 1024
BASE_BLOCK = 32768
#: Largest column group of the top-k selection.
_GROUP = 32


@dataclass
class KnnGraph:
    """The ``k`` nearest other faces of every face.

    Attributes:
        indices: ``(N, k)`` int64 row numbers of the neighbours, most similar first; ``-1`` pads
            rows with fewer than ``k`` neighbours. A face is never its own neighbour.
        sims: ``(N, k)`` float32 cosine similarities matching ``indices``; ``-inf`` where padded.
        backend: the neighbour index that built the graph.
        recall: recall@k against exact search on a sample (``None`` for exact graphs).
    """

    indices: np.ndarray
    sims: np.ndarray
    backend: str = "exact"
    recall: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, np.int64)
        self.sims = np.asarray(self.sims, np.float32)
        if self.indices.ndim != 2 or self.indices.shape != self.sims.shape:
            raise ConfigError(f"indices {self.indices.shape} and sims {self.sims.shape} must be equal (N, k) arrays")

    @property
    def n(self) -> int:
        """Number of faces."""
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        """Neighbours per face."""
        return int(self.indices.shape[1])

    def edges(self, min_sim: float = -np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Undirected edges ``u < v`` with their similarity, each pair once.

        A pair found from both sides keeps the larger similarity (they are equal for exact graphs).

        Args:
            min_sim: keep edges with similarity at or above this.

        Returns:
            ``(u, v, w)``: int64, int64, float32 arrays of equal length, sorted by ``(u, v)``.
        """
        rows = np.repeat(np.arange(self.n, dtype=np.int64), self.k)
        cols = self.indices.reshape(-1)
        w = self.sims.reshape(-1)
        keep = (cols >= 0) & (w >= min_sim)
        rows, cols, w = rows[keep], cols[keep], w[keep]
        u, v = np.minimum(rows, cols), np.maximum(rows, cols)
        key = u * self.n + v
        order = np.lexsort((-w, key))
        key, w = key[order], w[order]
        first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, bool)
        key, w = key[first], w[first]
        return key // self.n, key % self.n, w

    def subgraph(self, rows: np.ndarray) -> KnnGraph:
        """The graph restricted to faces ``rows``: neighbours outside are dropped, rows renumbered.

        Args:
            rows: ``(M,)`` row numbers (distinct).

        Returns:
            A graph over ``M`` faces (row ``i`` is face ``rows[i]``), same ``k``, padded with ``-1``.
        """
        rows = np.asarray(rows, np.int64)
        remap = np.full(self.n, -1, np.int64)
        remap[rows] = np.arange(len(rows))
        idx = self.indices[rows]
        new = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
        sims = np.where(new >= 0, self.sims[rows], -np.inf).astype(np.float32)
        order = np.argsort(-sims, axis=1, kind="stable")
        return KnnGraph(np.take_along_axis(new, order, 1), np.take_along_axis(sims, order, 1), self.backend)


def normalize_rows(x: Any, what: str = "embeddings") -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(N, D)`` array of unit rows.

    Raises:
        ConfigError: not 2-D, non-finite values, or a zero row.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be an (N, D) array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ConfigError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError(f"{what} contain NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    if len(norms) and norms.min() == 0.0:
        raise ConfigError(f"{what}: row {int(np.argmin(norms))} is a zero vector")
    if len(norms) and np.abs(norms - 1.0).max() > 1e-4:
        arr = arr / norms[:, None]
    return arr


def _block_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns of each row of ``scores`` (unordered): ``(cols int64, values)``.

    Columns are cut into ``G`` groups of ``g`` (group ``j`` = columns ``j, j + G, j + 2G, ...``,
    so the group maxima are ``g - 1`` element-wise maxima of contiguous blocks); only the ``k``
    groups with the largest maxima can hold a top-``k`` element, and ``argpartition`` runs on
    their ``k g`` values (plus the few columns past ``g G``).
    """
    bq, bb = scores.shape
    if k >= bb:
        cols = np.broadcast_to(np.arange(bb), (bq, bb))
        return np.array(cols, np.int64), scores.copy()
    g = min(_GROUP, bb // (4 * k))
    if g < 4:
        cols = np.argpartition(scores, bb - k, axis=1)[:, bb - k :]
        return cols.astype(np.int64), np.take_along_axis(scores, cols, 1)
    n_groups = bb // g
    gmax = scores[:, :n_groups].copy()
    for t in range(1, g):
        np.maximum(gmax, scores[:, t * n_groups : (t + 1) * n_groups], out=gmax)
    groups = np.argpartition(gmax, n_groups - k, axis=1)[:, n_groups - k :]
    cols = (groups[:, :, None] + n_groups * np.arange(g)).reshape(bq, k * g)
    if g * n_groups < bb:
        rest = np.broadcast_to(np.arange(g * n_groups, bb), (bq, bb - g * n_groups))
        cols = np.concatenate([cols, rest], axis=1)
    values = np.take_along_axis(scores, cols, 1)
    sel = np.argpartition(values, values.shape[1] - k, axis=1)[:, values.shape[1] - k :]
    return np.take_along_axis(cols, sel, 1).astype(np.int64), np.take_along_axis(values, sel, 1)


def _merge_topk(
    idx_a: np.ndarray, sim_a: np.ndarray, idx_b: np.ndarray, sim_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best of two candidate lists (unordered)."""
    idx = np.concatenate([idx_a, idx_b], axis=1)
    sim = np.concatenate([sim_a, sim_b], axis=1)
    if idx.shape[1] <= k:
        return idx, sim
    sel = np.argpartition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k :]
    return np.take_along_axis(idx, sel, 1), np.take_along_axis(sim, sel, 1)


def _sort_rows(idx: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows best first (ties: lower index); ``-inf`` entries become ``-1``."""
    if idx.shape[1] == 0:
        return idx, sim
    order = np.lexsort((idx, -sim), axis=1)
    idx = np.take_along_axis(idx, order, 1)
    sim = np.take_along_axis(sim, order, 1)
    return np.where(np.isneginf(sim), -1, idx), sim


def exact_search(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    query_block: int = QUERY_BLOCK,
    base_block: int = BASE_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search of ``queries`` in ``base`` (both unit rows).

    Args:
        base: ``(N, D)`` float32 unit rows.
        queries: ``(Q, D)`` float32 unit rows.
        k: neighbours per query (at most ``N``, or ``N - 1`` with ``exclude``).
        exclude: ``(Q,)`` int64 base row to leave out for each query (its own row in a self
            search), or ``-1`` for none.
        query_block: queries per matrix product.
        base_block: base rows per matrix product.

    Returns:
        ``(indices, sims)``: ``(Q, k)`` int64 base rows and float32 similarities, best first
        (ties by lower row); ``-1`` / ``-inf`` pad when fewer than ``k`` rows exist.
    """
    n, q = len(base), len(queries)
    k_eff = max(0, min(k, n - (1 if exclude is not None else 0)))
    out_idx = np.full((q, k), -1, np.int64)
    out_sim = np.full((q, k), -np.inf, np.float32)
    if k_eff == 0 or q == 0:
        return out_idx, out_sim
    for qs in range(0, q, query_block):
        qb = queries[qs : qs + query_block]
        ex = None if exclude is None else np.asarray(exclude[qs : qs + query_block], np.int64)
        best_idx = np.full((len(qb), 0), -1, np.int64)
        best_sim = np.full((len(qb), 0), -np.inf, np.float32)
        for bs in range(0, n, base_block):
            block = qb @ base[bs : bs + base_block].T
            if ex is not None:
                hit = np.flatnonzero((ex >= bs) & (ex < bs + len(block[0])))
                block[hit, ex[hit] - bs] = -np.inf
            kk = min(k_eff, block.shape[1])
            cols, vals = _block_topk(block, kk)
            best_idx, best_sim = _merge_topk(best_idx, best_sim, cols + bs, vals, k_eff)
        best_idx, best_sim = _sort_rows(best_idx, best_sim)
        out_idx[qs : qs + len(qb), :k_eff] = best_idx
        out_sim[qs : qs + len(qb), :k_eff] = best_sim
    return out_idx, out_sim


class NeighborIndex(Protocol):
    """What a neighbour index offers: add unit rows, search them."""

    name: str

    def add(self, vectors: np.ndarray) -> None:
        """Append ``(M, D)`` float32 unit rows (rows are numbered in order of addition)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, k)`` int64 rows and float32 similarities, best first; ``-1`` / ``-inf`` padding."""

    def __len__(self) -> int: ...


@NEIGHBOR_INDEXES.register("exact")
class ExactNeighbors:
    """Exact search over every stored row (:func:`exact_search`).

    Args:
        dim: embedding dimension.
    """

    name = "exact"

    def __init__(self, dim: int, **options: Any) -> None:
        if options:
            raise ConfigError(f"exact neighbour index takes no options, got {sorted(options)}")
        self.dim = int(dim)
        self._chunks: list[np.ndarray] = []
        self._data = np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        return len(self._data) + sum(len(c) for c in self._chunks)

    @property
    def data(self) -> np.ndarray:
        """All stored rows as one ``(N, D)`` array."""
        if self._chunks:
            self._data = np.concatenate([self._data, *self._chunks])
            self._chunks = []
        return self._data

    def add(self, vectors: np.ndarray) -> None:
        """Append unit rows."""
        vectors = normalize_rows(vectors)
        if vectors.shape[1] != self.dim:
            raise ConfigError(f"vectors have {vectors.shape[1]} dimensions, the index {self.dim}")
        if len(self._data) == 0 and not self._chunks:
            self._data = vectors
        else:
            self._chunks.append(vectors)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k``; ``exclude`` leaves out one row per query."""
        return exact_search(self.data, normalize_rows(queries, "queries"), k, exclude=exclude)


@NEIGHBOR_INDEXES.register("ivf")
class IVFNeighbors:
    """Inverted-file search in NumPy (approximate, no dependency).

    Spherical k-means on the *centred* rows (``iterations`` Lloyd steps on a sample of ``32`` rows
    per cell) cuts the rows into cells of about ``cell_size``: face embeddings share one direction
    (the open pack's different people still have cosine 0.83), and k-means on the raw rows would
    put most of them into a few cells. A row whose nearest cell is full (1.25 × the mean) is
    stored in its next nearest; a query is compared, by matrix products, with every
    row of its ``nprobe`` nearest cells. Processing goes cell by cell (all the queries that probe
    a cell against that cell's rows), so the work is a few thousand well-shaped matrix products:
    ``2 · nprobe · cell_size · D`` flops per query instead of ``2 N D``.

    Args:
        dim: embedding dimension.
        cell_size: mean rows per cell (default 1024).
        nprobe: cells searched per query (default 8).
        iterations: k-means iterations (default 10).
        seed: k-means seed.
    """

    name = "ivf"

    def __init__(self, dim: int, cell_size: int = 1024, nprobe: int = 8, iterations: int = 10, seed: int = 0) -> None:
        if cell_size < 1 or nprobe < 1 or iterations < 0:
            raise ConfigError("cell_size and nprobe must be >= 1, iterations >= 0")
        self.dim, self.cell_size, self.nprobe, self.iterations, self.seed = (
            int(dim),
            int(cell_size),
            int(nprobe),
            int(iterations),
            int(seed),
        )
        self.centroids: np.ndarray | None = None
        self._mean = np.zeros(self.dim, np.float32)
        self._data = np.zeros((0, self.dim), np.float32)
        self._cell = np.zeros(0, np.int64)
        self._probes = np.zeros((0, 0), np.int64)
        self._tail: list[np.ndarray] = []  # rows added after the cells were filled: searched exactly
        self._members: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._data) + sum(len(t) for t in self._tail)

    def _top_cells(self, x: np.ndarray, p: int, chunk: int = 16384) -> np.ndarray:
        return self._top_cells_scored(x, p, chunk)[0]

    def _top_cells_scored(self, x: np.ndarray, p: int, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """The ``p`` nearest cells of each row, nearest first, and their scores."""
        assert self.centroids is not None
        out = np.empty((len(x), p), np.int64)
        out_scores = np.empty((len(x), p), np.float32)
        n_cells = len(self.centroids)
        for s in range(0, len(x), chunk):
            part = x[s : s + chunk] - self._mean
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
            scores = part @ self.centroids.T
            if p >= n_cells:
                top = np.broadcast_to(np.arange(n_cells), (len(scores), n_cells))
            else:
                top = np.argpartition(scores, n_cells - p, axis=1)[:, n_cells - p :]
            vals = np.take_along_axis(scores, top, 1)
            order = np.argsort(-vals, axis=1)
            out[s : s + chunk] = np.take_along_axis(top, order, 1)
            out_scores[s : s + chunk] = np.take_along_axis(vals, order, 1)
        return out, out_scores

    def _place(self, probes: np.ndarray, scores: np.ndarray, start_counts: np.ndarray) -> np.ndarray:
        """Home cell of each row: its nearest cell with room (capacity 1.25 × the mean cell).

        Rows that want a full cell try their next-nearest ones; searches still probe every
        query's nearest cells, so a row placed in its second cell is found from its first.
        """
        n_cells = len(start_counts)
        total = int(start_counts.sum()) + len(probes)
        room = np.maximum(0, int(np.ceil(1.25 * total / n_cells)) - start_counts)
        home = np.full(len(probes), -1, np.int64)
        for r in range(probes.shape[1]):
            todo = np.flatnonzero(home < 0)
            if len(todo) == 0:
                break
            cell = probes[todo, r]
            order = np.lexsort((-scores[todo, r], cell))
            cell_sorted = cell[order]
            first = np.searchsorted(cell_sorted, cell_sorted)
            rank = np.arange(len(order)) - first
            ok = rank < room[cell_sorted]
            home[todo[order[ok]]] = cell_sorted[ok]
            room -= np.bincount(cell_sorted[ok], minlength=n_cells)
        rest = home < 0
        home[rest] = probes[rest, 0]
        return home

    def _train(self, x: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        n_cells = max(1, int(round(len(x) / self.cell_size)))
        sample = x[rng.choice(len(x), min(len(x), 32 * n_cells), replace=False)] if len(x) > 32 * n_cells else x
        n_cells = min(n_cells, len(sample))
        mean = sample.mean(axis=0)
        centred = normalize_rows(sample - mean)
        self.centroids = centred[rng.choice(len(sample), n_cells, replace=False)].copy()
        self._mean = np.zeros(self.dim, np.float32)  # the sample below is centred already
        for _ in range(self.iterations):
            assign = self._top_cells(centred, 1)[:, 0]
            order = np.argsort(assign, kind="stable")
            counts = np.bincount(assign, minlength=n_cells)
            starts = np.r_[0, np.cumsum(counts)[:-1]]
            means = np.zeros((n_cells, self.dim), np.float64)
            nonempty = counts > 0
            means[nonempty] = np.add.reduceat(centred[order].astype(np.float64), starts[nonempty], axis=0)
            empty = np.flatnonzero(~nonempty)
            if len(empty):
                means[empty] = centred[rng.choice(len(sample), len(empty), replace=False)]
            self.centroids = normalize_rows(means.astype(np.float32))
        self._mean = mean

    def add(self, vectors: np.ndarray) -> None:
        """Append unit rows; the first call trains the cells on them.

        Later rows wait in a small tail that is searched exactly (an incremental addition costs
        no copy of the library); the tail joins the cells once it reaches 5 % of the rows.
        """
        vectors = normalize_rows(vectors)
        if vectors.shape[1] != self.dim:
            raise ConfigError(f"vectors have {vectors.shape[1]} dimensions, the index {self.dim}")
        if self.centroids is None:
            self._train(vectors)
        elif len(self._data):
            self._tail.append(vectors)
            if sum(len(t) for t in self._tail) < 0.05 * len(self._data):
                return
            vectors = np.concatenate(self._tail)
            self._tail = []
        self._members = None
        p = min(self.nprobe, len(self.centroids))  # type: ignore[arg-type]
        probes, scores = self._top_cells_scored(vectors, p)
        home = self._place(probes, scores, np.bincount(self._cell, minlength=len(self.centroids)))
        self._data = vectors if len(self._data) == 0 else np.concatenate([self._data, vectors])
        self._cell = np.concatenate([self._cell, home])
        self._probes = probes if len(self._probes) == 0 else np.concatenate([self._probes, probes])

    def search(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None, *, _probes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top ``k``; ``exclude`` leaves out one row per query (``-1``: none)."""
        if self.centroids is None:
            raise ConfigError("the ivf index is empty: add vectors first")
        queries = normalize_rows(queries, "queries")
        n_q = len(queries)
        probes = self._top_cells(queries, min(self.nprobe, len(self.centroids))) if _probes is None else _probes
        n_cells = len(self.centroids)
        if self._members is None:
            member_order = np.argsort(self._cell, kind="stable")
            member_start = np.searchsorted(self._cell[member_order], np.arange(n_cells + 1))
            pos_in_cell = np.empty(len(self._cell), np.int64)
            pos_in_cell[member_order] = np.arange(len(member_order)) - member_start[self._cell[member_order]]
            self._members = (member_order, member_start, pos_in_cell)
        member_order, member_start, pos_in_cell = self._members
        flat_q = np.repeat(np.arange(n_q), probes.shape[1])
        flat_c = probes.reshape(-1)
        q_order = np.argsort(flat_c, kind="stable")
        q_start = np.searchsorted(flat_c[q_order], np.arange(n_cells + 1))
        best_idx = np.full((n_q, k), -1, np.int64)
        best_sim = np.full((n_q, k), -np.inf, np.float32)
        for c in range(n_cells):
            members = member_order[member_start[c] : member_start[c + 1]]
            qs = flat_q[q_order[q_start[c] : q_start[c + 1]]]
            if len(members) == 0 or len(qs) == 0:
                continue
            block_rows = self._data[members]
            for s in range(0, len(qs), QUERY_BLOCK * 4):
                qsub = qs[s : s + QUERY_BLOCK * 4]
                scores = queries[qsub] @ block_rows.T
                if exclude is not None:
                    ex = np.asarray(exclude, np.int64)[qsub]
                    in_cells = (ex >= 0) & (ex < len(self._cell))
                    hit = np.flatnonzero(in_cells & (self._cell[np.where(in_cells, ex, 0)] == c))
                    scores[hit, pos_in_cell[ex[hit]]] = -np.inf
                cols, vals = _block_topk(scores, min(k, scores.shape[1]))
                ids = np.where(np.isneginf(vals), -1, members[cols])
                best_idx[qsub], best_sim[qsub] = _merge_topk(best_idx[qsub], best_sim[qsub], ids, vals, k)
        if self._tail:
            tail = np.concatenate(self._tail)
            ex = None
            if exclude is not None:
                ex = np.asarray(exclude, np.int64) - len(self._data)
                ex = np.where((ex >= 0) & (ex < len(tail)), ex, -1)
            t_idx, t_sim = exact_search(tail, queries, min(k, len(tail)), exclude=ex)
            t_idx = np.where(t_idx >= 0, t_idx + len(self._data), -1)
            best_idx, best_sim = _merge_topk(best_idx, best_sim, t_idx, t_sim, k)
        return _sort_rows(best_idx, best_sim)

    def search_self(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every stored row's top ``k`` other rows (reuses the cells found when adding)."""
        return self.search(self._data, k, exclude=np.arange(len(self._data)), _probes=self._probes)


def _import_optional(module: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"this neighbour index needs the {pip_name!r} package: pip install {pip_name} ({exc})"
        ) from exc


@NEIGHBOR_INDEXES.register("faiss")
class FaissIVFNeighbors:
    """faiss ``IndexIVFFlat`` over inner products (approximate).

    Args:
        dim: embedding dimension.
        nlist: inverted lists; default ``4 sqrt(N)`` rounded to a power of two, set on the first
            :meth:`add` (which also trains the cells on up to ``64 nlist`` rows).
        nprobe: lists searched per query (default 16).
        seed: k-means seed.
    """

    name = "faiss"

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int = 16, seed: int = 0) -> None:
        self._faiss = _import_optional("faiss", "faiss-cpu")
        self.dim, self.nlist, self.nprobe, self.seed = int(dim), nlist, int(nprobe), int(seed)
        self._index: Any = None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append unit rows; the first call trains the inverted lists on them."""
        faiss = self._faiss
        vectors = normalize_rows(vectors)
        if self._index is None:
            n = len(vectors)
            nlist = self.nlist or max(1, 2 ** round(math.log2(max(1.0, 4.0 * math.sqrt(n)))))
            nlist = max(1, min(nlist, n // 8 or 1))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(self.seed)
            sample = vectors[rng.choice(n, min(n, 64 * nlist), replace=False)] if n > 64 * nlist else vectors
            index.cp.seed = self.seed
            index.train(sample)
            index.nprobe = min(self.nprobe, nlist)
            self._index, self.nlist = index, nlist
        self._index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top ``k``."""
        if self._index is None:
            raise ConfigError("the faiss index is empty: add vectors first")
        sims, idx = self._index.search(normalize_rows(queries, "queries"), k)
        sims = np.where(idx >= 0, sims, -np.inf).astype(np.float32)
        return idx.astype(np.int64), sims


@NEIGHBOR_INDEXES.register("usearch")
class UsearchNeighbors:
    """usearch HNSW graph with the cosine metric (approximate).

    Args:
        dim: embedding dimension.
        connectivity: HNSW ``M`` (usearch default 16).
        expansion_add: construction beam (default 128).
        expansion_search: search beam (default 64; raised to ``k`` when smaller).
        threads: worker threads (0 = all cores).
    """

    name = "usearch"

    def __init__(
        self, dim: int, connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 64, threads: int = 0
    ) -> None:
        usearch_index = _import_optional("usearch.index", "usearch")
        self.dim, self.threads = int(dim), int(threads)
        self._index = usearch_index.Index(
            ndim=self.dim,
            metric="cos",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, vectors: np.ndarray) -> None:
        """Append unit rows."""
        vectors = normalize_rows(vectors)
        keys = np.arange(self._n, self._n + len(vectors), dtype=np.uint64)
        self._index.add(keys, vectors, threads=self.threads)
        self._n += len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top ``k``."""
        queries = normalize_rows(queries, "queries")
        self._index.expansion_search = max(self._index.expansion_search, k)
        found = self._index.search(queries, k, threads=self.threads)
        keys = np.asarray(found.keys, np.int64).reshape(len(queries), -1)
        dist = np.asarray(found.distances, np.float32).reshape(len(queries), -1)
        counts = np.asarray(found.counts).reshape(-1)
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        idx = np.where(valid, keys, -1)
        sims = np.where(valid, 1.0 - dist, -np.inf).astype(np.float32)
        if idx.shape[1] < k:
            pad = k - idx.shape[1]
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        return idx, sims


def make_neighbor_index(backend: str, dim: int, **options: Any) -> NeighborIndex:
    """Create an empty neighbour index of a registered kind (``"exact"``, ``"faiss"``, ``"usearch"``).

    Raises:
        ConfigError: an unknown kind, or its package is not installed.
    """
    if backend not in NEIGHBOR_INDEXES:
        raise ConfigError(f"unknown neighbour index {backend!r}; known: {NEIGHBOR_INDEXES.names()}")
    return NEIGHBOR_INDEXES.get(backend)(dim, **options)


def _auto_backend(n: int) -> str:
    return "exact" if n <= AUTO_EXACT_MAX else "ivf"


def _drop_self(idx: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from a ``k + 1`` search; keep ``k``."""
    rows = np.arange(len(idx))[:, None]
    is_self = idx == rows
    # keep the first k entries that are not the row itself
    keep_rank = np.cumsum(~is_self, axis=1)
    mask = (~is_self) & (keep_rank <= k)
    out_idx = np.full((len(idx), k), -1, np.int64)
    out_sim = np.full((len(idx), k), -np.inf, np.float32)
    r, c = np.nonzero(mask)
    pos = keep_rank[r, c] - 1
    out_idx[r, pos] = idx[r, c]
    out_sim[r, pos] = sims[r, c]
    return out_idx, out_sim


def build_knn(
    embeddings: np.ndarray,
    k: int = 16,
    *,
    backend: str = "auto",
    recall_sample: int = 1000,
    seed: int = 0,
    **options: Any,
) -> KnnGraph:
    """The ``k``-nearest-neighbour graph of a set of embeddings (cosine similarity).

    Args:
        embeddings: ``(N, D)`` embeddings; normalised here when they are not unit rows.
        k: neighbours per face (excluding the face itself).
        backend: ``"auto"``, or a :data:`NEIGHBOR_INDEXES` kind.
        recall_sample: faces on which an approximate graph's recall@k is measured against exact
            search (0 to skip).
        seed: sampling seed of the recall estimate (and of faiss's k-means).
        options: passed to the index class.

    Returns:
        The :class:`KnnGraph`.

    Raises:
        ConfigError: bad embeddings, ``k < 1``, or an unknown / uninstalled backend.
    """
    x = normalize_rows(embeddings)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    n = len(x)
    name = _auto_backend(n) if backend == "auto" else backend
    if name == "faiss":
        options.setdefault("seed", seed)
    index = make_neighbor_index(name, x.shape[1], **options)
    index.add(x)
    if name == "exact":
        idx, sims = index.search(x, k, exclude=np.arange(n))
        return KnnGraph(idx, sims, "exact", None, {"n": n, "k": k})
    if hasattr(index, "search_self"):
        idx, sims = index.search_self(k)
    else:
        idx, sims = _drop_self(*index.search(x, min(k + 1, n)), k)
    graph = KnnGraph(idx, sims, name, None, {"n": n, "k": k, "index": index})
    if recall_sample:
        graph.recall = graph_recall(graph, x, recall_sample, seed=seed)
        _logger.info("%s kNN graph: recall@%d %.4f on %d faces", name, k, graph.recall, min(n, recall_sample))
    return graph


def graph_recall(
    graph: KnnGraph, embeddings: np.ndarray, sample: int = 1000, seed: int = 0, min_sim: float | None = None
) -> float:
    """Recall@k of ``graph`` against exact search on ``sample`` random faces.

    A true neighbour counts as found when its row appears in the graph's row, or when the graph's
    ``k`` neighbours are all at least as similar (ties are interchangeable).

    Args:
        graph: the graph to check.
        embeddings: the ``(N, D)`` embeddings it was built from.
        sample: faces checked.
        seed: sampling seed.
        min_sim: count only true neighbours at least this similar (the edges a clustering uses).

    Returns:
        The fraction of true neighbours found, in ``[0, 1]`` (1 when none qualifies).
    """
    x = normalize_rows(embeddings)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), min(sample, len(x)), replace=False) if len(x) > sample else np.arange(len(x))
    true_idx, true_sim = exact_search(x, x[rows], graph.k, exclude=rows)
    found = total = 0
    for r, ti, ts in zip(rows, true_idx, true_sim):
        valid = ti >= 0 if min_sim is None else (ti >= 0) & (ts >= min_sim)
        total += int(valid.sum())
        row = graph.indices[r]
        got = set(row[row >= 0].tolist())
        full = int((row >= 0).sum()) == graph.k
        floor = float(graph.sims[r][row >= 0].min()) if full else np.inf
        found += sum(1 for i, s in zip(ti[valid], ts[valid]) if i in got or s <= floor + 1e-6)
    return found / total if total else 1.0
