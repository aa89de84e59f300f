"""In-memory 1:N search over face embeddings: exact FP32, FP16 and INT8, optional ANN.

An index holds L2-normalised embeddings under stable ``int64`` vector ids, each in a group (the
person it belongs to), and answers top-k queries by vector (:meth:`ExactIndex.search`) or by group
(:meth:`ExactIndex.search_groups`: a person scores the max over its faces). The store keeps it in
step (it is rebuilt from the store, never the other way round).

Precisions (:data:`PRECISIONS`) follow InsightFace Server 0.2's search profiles:

* ``"fp32"``: the embeddings as they are, 4 bytes per dimension; scores are float32 dot products.
* ``"fp16"``: rows stored as IEEE half floats, 2 bytes per dimension; scores are the dot of the
  half-precision row with the query rounded to half precision, accumulated in float32.
* ``"int8"`` (the Server's ``int8_x736_v1``): rows and queries quantised by :func:`quantize_int8`
  (scale :data:`INT8_SCALE`), 1 byte per dimension; score = ``int32 dot / scale²``; ordering uses
  that unclipped score, returned scores are clamped to ``[-1, 1]``; no re-ranking.

Ties: vectors order by score descending, then id ascending; within a group the lowest vector id at
the group's max wins; groups order by score descending, then group id ascending.

Storage is one contiguous matrix with spare capacity (doubled when full) and swap-with-last
deletion, so adding and removing never copy the whole matrix each time, and a query reads the
rows in place. Ids map to rows by binary search while the rows are in id order (as loaded from
the store), by a dict once a removal has moved rows. :meth:`ExactIndex.arrays` and
:meth:`ExactIndex.restore` hand the stored rows out and take them back as they are (the index
snapshots of :mod:`facelab.gallery._index_snapshot`).

FP32 is scored by NumPy's BLAS, FP16 and INT8 by NumKong's SIMD kernels (extra ``facelab[search]``;
see :mod:`facelab.gallery._search_kernels` for what was measured against ONNX Runtime's integer
MatMul). Top-k selection is exact and costs a few percent of the scan
(:mod:`facelab.gallery._search_select`). Searches may run from several threads at once; a mutation
must not run concurrently with anything else on the same index (the store serialises them).

Example:
    >>> import numpy as np
    >>> index = make_index("exact", dim=4)
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> index.add(np.array([10, 11, 12, 13]), vectors, groups=np.array([1, 1, 2, 3]))
    >>> [int(i) for i in index.search(vectors[:1], k=2)[0].ids]
    [10, 11]
    >>> hits = index.search_groups(vectors[1:2], k=2)[0]
    >>> [int(g) for g in hits.groups], [int(v) for v in hits.vector_ids]
    ([1, 2], [11, 12])
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery import _search_select as select
from facelab.gallery._search_kernels import BACKENDS, INT8_SCALE, KERNELS, parallel_map, quantize_int8
from facelab.registry import Registry

if TYPE_CHECKING:
    from facelab.gallery._search_ann import AnnIndex

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "INT8_SCALE",
    "INDEXES",
    "VectorHits",
    "GroupHits",
    "ExactIndex",
    "AnnIndex",  # noqa: F822 - resolved by the module __getattr__ (lazy: its module imports this one)
    "make_index",
    "quantize_int8",
    "recall_at_k",
]

_logger = logging.getLogger(__name__)

#: Search precisions of :class:`ExactIndex` (``int8`` is InsightFace Server's ``int8_x736_v1``).
PRECISIONS = ("fp32", "fp16", "int8")
#: Stored vectors must have an L2 norm within this distance of 1.
NORM_TOLERANCE = 1e-2
#: Rows validated and encoded per step when adding (4096 x 512 float32 = 8 MB: stays in cache).
_BLOCK = 4096
#: Index kinds for :func:`make_index`; each entry is a class taking ``(dim, **options)``.
INDEXES: Registry = Registry("search index")


@dataclass(frozen=True)
class VectorHits:
    """Top-k vectors of one query, best first.

    Attributes:
        ids: vector ids ``(k,)`` int64.
        scores: their scores ``(k,)`` float32 (cosine similarity of unit vectors).
    """

    ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class GroupHits:
    """Top-k groups (persons) of one query, best first.

    Attributes:
        groups: group ids ``(k,)`` int64.
        scores: group scores ``(k,)`` float32: the max over the group's vectors.
        vector_ids: the best vector of each group ``(k,)`` int64 (lowest id among ties).
    """

    groups: np.ndarray
    scores: np.ndarray
    vector_ids: np.ndarray


def _int_array(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; :class:`ConfigError` for anything else."""
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ConfigError(f"{what} must be a 1-D array of integers, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.int64)
    if array.dtype.kind not in "iu":
        raise ConfigError(f"{what} must be integers, got dtype {array.dtype}")
    if array.dtype == np.uint64 and int(array.max()) > np.iinfo(np.int64).max:
        raise ConfigError(f"{what} must fit in int64")
    return array.astype(np.int64, copy=False)


def _strictly_increasing(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or (values[1:] > values[:-1]).all())


def _positive_int(value: Any, what: str = "k") -> int:
    """``value`` as an ``int`` when it is a positive integer (not a bool); :class:`ConfigError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


@INDEXES.register("exact")
class ExactIndex:
    """Exact (brute-force) top-k search over every stored vector, in FP32, FP16 or INT8.

    Args:
        dim: embedding dimension (e.g. 512).
        precision: one of :data:`PRECISIONS`.
        capacity: rows to allocate up front (grown by doubling when full).
        backend: score kernel for FP16/INT8 (:data:`BACKENDS`): ``"auto"`` (NumKong's SIMD kernels
            when ``numkong`` is installed, else NumPy), ``"numkong"`` or ``"numpy"``. FP32 always
            uses NumPy's BLAS.

    Raises:
        ConfigError: an unknown precision or backend, or a non-positive dimension.
    """

    def __init__(self, dim: int, precision: str = "fp32", capacity: int = 1024, backend: str = "auto") -> None:
        self.dim = _positive_int(dim, "dim")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown search precision {precision!r}; known: {list(PRECISIONS)}")
        self.precision = precision
        self._kernel = KERNELS.get(precision)(self.dim, backend)
        capacity = max(1, int(capacity))
        self._data = np.empty((capacity, self.dim), self._kernel.storage_dtype)
        self._ids = np.empty(capacity, np.int64)
        self._groups = np.empty(capacity, np.int64)
        self._n = 0
        # id -> row. None while the rows are in ascending id order (a bulk load from the store):
        # lookups then use a binary search and no dict is built; the first change that breaks
        # the order (a removal that moves rows, an add of lower ids) builds the dict once.
        self._row_of: dict[int, int] | None = None

    @classmethod
    def restore(
        cls, ids: Any, groups: Any, rows: np.ndarray, precision: str = "fp32", backend: str = "auto"
    ) -> ExactIndex:
        """An index over rows already in this precision's storage format (see :meth:`arrays`).

        For trusted rows written by :meth:`arrays` of an index of the same precision (an index
        snapshot): they are used in place, not copied or checked for norms, so they may be a
        (copy-on-write) memory map. Adding beyond them moves everything into fresh memory.

        Args:
            ids: ``(n,)`` int64 unique vector ids.
            groups: ``(n,)`` int64 group of each row.
            rows: ``(n, dim)`` stored rows: float32, float16 or int8 (``int8_x736_v1``) for
                ``precision`` fp32, fp16, int8; C-contiguous and writable.
            precision: one of :data:`PRECISIONS`.
            backend: as for the constructor.

        Raises:
            ConfigError: shapes or dtype that do not fit, or duplicate ids.
        """
        ids, groups = (
            a if a.flags.writeable else a.copy() for a in (_int_array(ids, "ids"), _int_array(groups, "groups"))
        )
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[0] != len(ids) or len(groups) != len(ids) or rows.shape[1] < 1:
            raise ConfigError(f"restore: {len(ids)} ids, {len(groups)} groups and rows of shape {rows.shape}")
        index = cls(rows.shape[1], precision, capacity=1, backend=backend)
        if rows.dtype != index._kernel.storage_dtype or not rows.flags.c_contiguous or not rows.flags.writeable:
            raise ConfigError(f"restore: {precision} rows must be writable C-contiguous {index._kernel.storage_dtype}")
        if len(ids):
            if not _strictly_increasing(ids):
                if len(np.unique(ids)) != len(ids):
                    raise ConfigError("restore: duplicate ids")
                index._row_of = dict(zip(ids.tolist(), range(len(ids))))
            index._data, index._ids, index._groups, index._n = rows, ids, groups, len(ids)
        return index

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The live rows ``(ids (n,) int64, groups (n,) int64, stored rows (n, dim))``, as views.

        The stored rows are in this precision's format (what :meth:`restore` takes). The views
        are valid until the next change of the index.
        """
        n = self._n
        return self._ids[:n], self._groups[:n], self._data[:n]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self.dim}, precision={self.precision!r}, size={self._n}, backend={self.backend!r})"

    @property
    def backend(self) -> str:
        """The score kernel in use: ``"numpy"`` or ``"numkong"``."""
        return self._kernel.backend

    @property
    def nbytes(self) -> int:
        """Bytes held by the live rows: vectors, ids and groups (an id map, once built, comes on top)."""
        return self._n * (self._data.itemsize * self.dim + 16)

    # ------------------------------------------------------------------ id map

    def _id_map(self) -> dict[int, int]:
        """The id -> row dict, built now if the index was in sorted (binary search) mode."""
        if self._row_of is None:
            self._row_of = dict(zip(self._ids[: self._n].tolist(), range(self._n)))
        return self._row_of

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id ``(m,)`` int64, ``-1`` for an id not in the index."""
        if self._row_of is None:
            if self._n == 0:
                return np.full(len(ids), -1, np.int64)
            live = self._ids[: self._n]
            pos = np.minimum(np.searchsorted(live, ids), self._n - 1)
            return np.where(live[pos] == ids, pos, -1).astype(np.int64, copy=False)
        get = self._row_of.get
        return np.fromiter((get(i, -1) for i in ids.tolist()), np.int64, len(ids))

    # ------------------------------------------------------------------ mutation

    def _check_vectors(self, vectors: Any, n: int) -> np.ndarray:
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape != (n, self.dim):
            raise ConfigError(f"vectors must have shape ({n}, {self.dim}), got {array.shape}")
        if array.dtype.kind not in "fiu":
            raise ConfigError(f"vectors must be floating point, got dtype {array.dtype}")
        array = np.ascontiguousarray(array, np.float32)
        bad_rows, first_bad, first_norm = 0, -1, 0.0
        for a in range(0, n, _BLOCK):  # in cache-sized blocks: no full-size temporaries
            block = array[a : a + _BLOCK]
            norms = np.sqrt(np.einsum("ij,ij->i", block, block))  # a NaN or infinite entry makes its norm so
            if not np.isfinite(norms).all():
                raise ConfigError("vectors contain NaN or infinite values (or values too large to square)")
            bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
            if bad.size and first_bad < 0:
                first_bad, first_norm = a + int(bad[0]), float(norms[bad[0]])
            bad_rows += bad.size
        if bad_rows:
            raise ConfigError(
                f"vectors must be L2-normalised: row {first_bad} has norm {first_norm:.4f} ({bad_rows} such rows)"
            )
        return array

    def _reserve(self, rows: int) -> None:
        capacity = len(self._ids)
        if rows <= capacity:
            return
        while capacity < rows:
            capacity *= 2
        data = np.empty((capacity, self.dim), self._data.dtype)
        data[: self._n] = self._data[: self._n]
        ids = np.empty(capacity, np.int64)
        ids[: self._n] = self._ids[: self._n]
        groups = np.empty(capacity, np.int64)
        groups[: self._n] = self._groups[: self._n]
        self._data, self._ids, self._groups = data, ids, groups

    def add(self, ids: Any, vectors: Any, groups: Any) -> None:
        """Add vectors.

        Args:
            ids: ``(n,)`` int64 vector ids, unique and not yet in the index.
            vectors: ``(n, dim)`` float32, L2-normalised, finite.
            groups: ``(n,)`` int64 group (person) id of each vector.

        Raises:
            ConfigError: duplicate or already present ids, wrong shapes, non-finite or
                non-normalised vectors.
        """
        ids = _int_array(ids, "ids")
        groups = _int_array(groups, "groups")
        n = len(ids)
        if len(groups) != n:
            raise ConfigError(f"got {n} ids but {len(groups)} groups")
        vectors = self._check_vectors(vectors, n)
        if n == 0:
            return
        ascending = _strictly_increasing(ids)
        if not ascending:
            uniq, counts = np.unique(ids, return_counts=True)
            if len(uniq) != n:
                raise ConfigError(f"duplicate ids in one add: {uniq[counts > 1][:5].tolist()}")
        present = ids[self._lookup(ids) >= 0]
        if len(present):
            raise ConfigError(f"ids already in the index: {present[:5].tolist()} ({len(present)} in all)")
        start = self._n
        if self._row_of is None and not (ascending and (start == 0 or ids[0] > self._ids[start - 1])):
            self._id_map()  # the rows will no longer be in id order
        self._reserve(start + n)
        for a in range(0, n, _BLOCK):  # encode in cache-sized blocks straight into the storage
            self._kernel.encode_into(vectors[a : a + _BLOCK], self._data[start + a : start + min(n, a + _BLOCK)])
        self._ids[start : start + n] = ids
        self._groups[start : start + n] = groups
        if self._row_of is not None:
            self._row_of.update(zip(ids.tolist(), range(start, start + n)))
        self._n = start + n

    def _remove_rows(self, rows: np.ndarray) -> int:
        """Delete index rows: the last live rows move into the holes (swap-with-last)."""
        rows = np.unique(rows)
        r = len(rows)
        if r == 0:
            return 0
        new_n = self._n - r
        holes = rows[rows < new_n]
        if len(holes):
            self._id_map()  # rows move: the id order is lost
        if self._row_of is not None:
            for vector_id in self._ids[rows].tolist():
                del self._row_of[vector_id]
        tail = np.arange(new_n, self._n)
        movers = tail[~np.isin(tail, rows, assume_unique=True)]
        if len(holes):
            self._data[holes] = self._data[movers]
            self._ids[holes] = self._ids[movers]
            self._groups[holes] = self._groups[movers]
            self._row_of.update(zip(self._ids[holes].tolist(), holes.tolist()))  # type: ignore[union-attr]
        self._n = new_n
        return r

    def remove(self, ids: Any) -> int:
        """Remove vectors by id; unknown ids are ignored. Returns the number removed."""
        rows = self._lookup(_int_array(ids, "ids"))
        return self._remove_rows(rows[rows >= 0])

    def remove_groups(self, groups: Any) -> int:
        """Remove every vector of the given groups. Returns the number removed."""
        groups = _int_array(groups, "groups")
        return self._remove_rows(np.flatnonzero(np.isin(self._groups[: self._n], groups)))

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        rows = self._lookup(ids)
        missing = ids[rows < 0]
        if len(missing):
            raise ConfigError(f"ids not in the index: {missing[:5].tolist()} ({len(missing)} in all)")
        return rows

    def set_groups(self, ids: Any, groups: Any) -> None:
        """Move vectors to other groups (a merge or a move of persons).

        Raises:
            ConfigError: an id not in the index, or ``ids`` and ``groups`` of different lengths.
        """
        ids = _int_array(ids, "ids")
        groups = _int_array(groups, "groups")
        if len(groups) != len(ids):
            raise ConfigError(f"got {len(ids)} ids but {len(groups)} groups")
        self._groups[self._rows(ids)] = groups

    def clear(self) -> None:
        """Remove every vector (capacity is kept)."""
        self._n = 0
        self._row_of = None

    def ids(self) -> np.ndarray:
        """Ids of every stored vector ``(n,)`` int64, ascending."""
        live = self._ids[: self._n]
        return live.copy() if self._row_of is None else np.sort(live)

    def groups_of(self, ids: Any) -> np.ndarray:
        """Group of each id ``(n,)`` int64; :class:`ConfigError` for an id not in the index."""
        return self._groups[self._rows(_int_array(ids, "ids"))].copy()

    def contains(self, ids: Any) -> np.ndarray:
        """Whether each id is in the index ``(n,)`` bool."""
        return self._lookup(_int_array(ids, "ids")) >= 0

    def ids_of_groups(self, groups: Any) -> np.ndarray:
        """Ids of every vector in the given groups ``(m,)`` int64, ascending."""
        groups = _int_array(groups, "groups")
        return np.sort(self._ids[: self._n][np.isin(self._groups[: self._n], groups)])

    # ------------------------------------------------------------------ search

    def _check_queries(self, queries: Any) -> np.ndarray:
        array = np.asarray(queries)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ConfigError(f"queries must have shape (q, {self.dim}), got {np.shape(queries)}")
        if array.dtype.kind not in "fiu":
            raise ConfigError(f"queries must be floating point, got dtype {array.dtype}")
        array = np.ascontiguousarray(array, np.float32)
        if not np.isfinite(array).all():
            raise ConfigError("queries contain NaN or infinite values")
        return array

    def _queries_per_pass(self, q: int) -> int:
        """Queries per pass over the matrix: 64 at most; FP32 keeps its full score matrix within 256 MB."""
        if self._kernel.parallel:
            return max(1, min(q, 64))
        return max(1, min(q, 64, 2**26 // max(1, self._n)))

    def _scan(self, queries: np.ndarray, k: int, by_group: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-k rows (and raw scores) per query: thresholds from a sample, then one full scan.

        FP32 (BLAS) scores the whole matrix in one call (a BLAS call per block was 3x slower for
        one query on a loaded machine), then selects block by block on the thread pool; the SIMD
        kernels score blocks on the thread pool, each block selecting its own candidates.
        """
        n, kernel = self._n, self._kernel
        data, ids, groups = self._data[:n], self._ids[:n], self._groups[:n]
        step = select.sample_step(n, k)
        rows_step = select.BLOCK_ROWS
        results: list[tuple[np.ndarray, np.ndarray]] = []
        per_pass = self._queries_per_pass(len(queries))
        for q0 in range(0, len(queries), per_pass):
            chunk = queries[q0 : q0 + per_pass]
            prepared = kernel.prepare(chunk)
            q = len(chunk)
            full = None if kernel.parallel and step > 1 else kernel.scores(data, prepared)
            sample = full[::step] if full is not None else kernel.scores(data[::step], prepared)
            if by_group:
                thresholds = select.group_thresholds(sample, groups[::step], k)
            else:
                thresholds = select.vector_thresholds(sample, k)
            # every row passes a lowest threshold: keep one candidate per group and block then
            dedupe = by_group and bool(np.any(thresholds == select.lowest(thresholds.dtype)))

            block = functools.partial(self._block, full=full, prepared=prepared, thresholds=thresholds, dedupe=dedupe)
            parts = parallel_map(block, range(0, n, rows_step), True)  # NumPy's selection releases the GIL too
            rows, cols, values = (np.concatenate(p) for p in zip(*parts))
            if by_group:
                results.extend(select.top_groups(rows, cols, values, ids, groups, q, k))
            else:
                results.extend(select.top_vectors(rows, cols, values, ids, q, k))
        return results

    def _block(
        self, a: int, full: np.ndarray | None, prepared: Any, thresholds: np.ndarray, dedupe: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates of rows ``a : a + BLOCK_ROWS``, scored now unless ``full`` holds every score."""
        end = min(self._n, a + select.BLOCK_ROWS)
        scores = full[a:end] if full is not None else self._kernel.scores(self._data[a:end], prepared)
        found = select.candidates(scores, thresholds, a)
        return select.best_per_group(*found, self._ids[: self._n], self._groups[: self._n]) if dedupe else found

    def search(self, queries: Any, k: int) -> list[VectorHits]:
        """Top-k vectors per query, best first (fewer when the index holds fewer than ``k``).

        Args:
            queries: ``(q, dim)`` float32 (a single ``(dim,)`` vector is one query).
            k: hits per query.

        Returns:
            One :class:`VectorHits` per query.
        """
        queries = self._check_queries(queries)
        k = _positive_int(k)
        if self._n == 0:
            return [VectorHits(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in queries]
        return [
            VectorHits(self._ids[rows].copy(), self._kernel.public(values))
            for rows, values in self._scan(queries, k, by_group=False)
        ]

    def search_groups(self, queries: Any, k: int) -> list[GroupHits]:
        """Top-k groups per query: a group scores the max over its vectors (exact).

        Args:
            queries: ``(q, dim)`` float32 (a single ``(dim,)`` vector is one query).
            k: groups per query.

        Returns:
            One :class:`GroupHits` per query, groups by score descending then group id ascending.
        """
        queries = self._check_queries(queries)
        k = _positive_int(k)
        if self._n == 0:
            empty = np.zeros(0, np.int64)
            return [GroupHits(empty, np.zeros(0, np.float32), empty.copy()) for _ in queries]
        return [
            GroupHits(self._groups[rows].copy(), self._kernel.public(values), self._ids[rows].copy())
            for rows, values in self._scan(queries, k, by_group=True)
        ]


def make_index(kind: str, dim: int, **options: Any) -> ExactIndex | AnnIndex:
    """Create a search index by kind (:data:`INDEXES`: ``"exact"``, ``"ann"``).

    Args:
        kind: the index kind.
        dim: embedding dimension.
        **options: passed to the index class: ``precision``, ``capacity``, ``backend`` for
            ``"exact"`` (:class:`ExactIndex`); ``precision``, ``connectivity``, ``expansion_add``,
            ``expansion_search``, ``group_oversample``, ``threads`` for ``"ann"`` (:class:`AnnIndex`).

    Raises:
        ConfigError: an unknown kind or option.
    """
    try:
        cls = INDEXES.get(kind)
    except KeyError:
        raise ConfigError(f"unknown search index kind {kind!r}; known: {INDEXES.names()}") from None
    try:
        return cls(dim, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for search index {kind!r}: {exc}") from None


def recall_at_k(approx: Iterable[VectorHits], exact: Iterable[VectorHits], k: int) -> float:
    """Mean fraction of the exact top-k ids that the approximate top-k finds.

    Args:
        approx: hits of the index under test, one per query.
        exact: hits of an exact search of the same vectors, same queries.
        k: the cut-off (each list is cut to its first ``k``).

    Returns:
        Recall in ``[0, 1]``; queries whose exact list is empty count as fully recalled.

    Raises:
        ConfigError: lists of different lengths or a bad ``k``.
    """
    approx, exact = list(approx), list(exact)
    k = _positive_int(k)
    if len(approx) != len(exact):
        raise ConfigError(f"recall needs one approximate and one exact list per query: {len(approx)} vs {len(exact)}")
    if not exact:
        raise ConfigError("recall of zero queries is undefined")
    total = 0.0
    for a, e in zip(approx, exact):
        truth = set(np.asarray(e.ids)[:k].tolist())
        total += len(truth & set(np.asarray(a.ids)[:k].tolist())) / len(truth) if truth else 1.0
    return total / len(exact)


def _make_ann(dim: int, **options: Any) -> Any:
    """``make_index("ann", ...)``: the approximate index, imported when first asked for."""
    from facelab.gallery._search_ann import AnnIndex

    return AnnIndex(dim, **options)


INDEXES.register("ann")(_make_ann)


def __getattr__(name: str) -> Any:
    # AnnIndex builds on the names above (its module imports this one), so it is resolved lazily.
    if name == "AnnIndex":
        from facelab.gallery._search_ann import AnnIndex

        return AnnIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
