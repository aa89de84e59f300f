"""Approximate (HNSW) search with usearch, always reporting its recall against an exact FP32 scan.

:class:`AnnIndex` keeps two structures in step: an HNSW graph (``usearch``, extra ``facelab[ann]``,
imported lazily) that answers queries, and an FP32 :class:`~facelab.gallery.search.ExactIndex`
of the same vectors that holds the ids and groups and is the ground truth of
:meth:`AnnIndex.recall_report`. The exact copy doubles the memory of an FP32 graph (usearch keeps
its own vectors): it is the price of a recall that is measured, not assumed.

HNSW parameters and their usearch defaults: ``connectivity`` (M) 16, ``expansion_add``
(ef_construction) 128, ``expansion_search`` (ef_search) 64. Person search asks the graph for
``group_oversample × k`` vectors (more while fewer than ``k`` persons come back) and takes the max
per person: approximate too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery.search import ExactIndex, GroupHits, VectorHits, _int_array, _positive_int, recall_at_k

__all__ = ["AnnIndex"]

_logger = logging.getLogger(__name__)

#: facelab precision name -> usearch scalar kind of the graph's vectors (usearch's own quantisation).
_DTYPES = {"fp32": "f32", "fp16": "f16", "int8": "i8"}


def _usearch_index_class() -> Any:
    try:
        from usearch.index import Index
    except ImportError:
        raise ConfigError("approximate search (AnnIndex) needs usearch: pip install 'facelab[ann]'") from None
    return Index


class AnnIndex:
    """HNSW approximate top-k search (usearch) with the API of :class:`~facelab.gallery.search.ExactIndex`.

    Args:
        dim: embedding dimension.
        precision: how the graph stores vectors: ``"fp32"``, ``"fp16"`` or ``"int8"`` (usearch's
            own scalar quantisation, not ``int8_x736_v1``).
        connectivity: HNSW ``M`` (edges per node).
        expansion_add: HNSW ``ef_construction``.
        expansion_search: HNSW ``ef_search`` (raise it for recall, lower it for speed).
        group_oversample: vectors fetched per wanted person in :meth:`search_groups`.
        threads: usearch threads for add and search (0 = all cores).

    Raises:
        ConfigError: usearch is not installed, or a bad option.
    """

    def __init__(
        self,
        dim: int,
        precision: str = "fp32",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        group_oversample: int = 4,
        threads: int = 0,
    ) -> None:
        if precision not in _DTYPES:
            raise ConfigError(f"unknown ANN precision {precision!r}; known: {list(_DTYPES)}")
        for name, value in (
            ("connectivity", connectivity),
            ("expansion_add", expansion_add),
            ("expansion_search", expansion_search),
            ("group_oversample", group_oversample),
        ):
            _positive_int(value, name)
        index_class = _usearch_index_class()
        self._exact = ExactIndex(dim, "fp32")
        self.dim = self._exact.dim
        self.precision = precision
        self.group_oversample = int(group_oversample)
        self.threads = int(threads)
        self._graph = index_class(
            ndim=self.dim,
            metric="ip",
            dtype=_DTYPES[precision],
            connectivity=int(connectivity),
            expansion_add=int(expansion_add),
            expansion_search=int(expansion_search),
        )

    def __len__(self) -> int:
        return len(self._exact)

    def __repr__(self) -> str:
        return f"AnnIndex(dim={self.dim}, precision={self.precision!r}, size={len(self)})"

    @property
    def expansion_search(self) -> int:
        """HNSW ``ef_search``; settable."""
        return int(self._graph.expansion_search)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self._graph.expansion_search = _positive_int(value, "expansion_search")

    @property
    def nbytes(self) -> int:
        """Bytes of the graph (usearch's count) plus those of the exact copy."""
        return int(self._graph.memory_usage) + self._exact.nbytes

    @staticmethod
    def _keys(ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(ids, np.int64).view(np.uint64)

    def add(self, ids: Any, vectors: Any, groups: Any) -> None:
        """Add vectors (same contract and errors as :meth:`ExactIndex.add`)."""
        ids = _int_array(ids, "ids")
        self._exact.add(ids, vectors, groups)  # validates everything before the graph is touched
        if len(ids):
            self._graph.add(self._keys(ids), np.ascontiguousarray(vectors, np.float32), threads=self.threads)

    def remove(self, ids: Any) -> int:
        """Remove vectors by id; unknown ids are ignored. Returns the number removed."""
        ids = _int_array(ids, "ids")
        present = ids[self._exact.contains(ids)] if len(ids) else ids
        if len(present):
            self._graph.remove(self._keys(np.unique(present)))
        return self._exact.remove(present)

    def remove_groups(self, groups: Any) -> int:
        """Remove every vector of the given groups. Returns the number removed."""
        return self.remove(self._exact.ids_of_groups(groups))

    def set_groups(self, ids: Any, groups: Any) -> None:
        """Move vectors to other groups (the graph does not change)."""
        self._exact.set_groups(ids, groups)

    def clear(self) -> None:
        """Remove every vector."""
        self._exact.clear()
        self._graph.clear()

    def ids(self) -> np.ndarray:
        """Ids of every stored vector ``(n,)`` int64, ascending."""
        return self._exact.ids()

    def groups_of(self, ids: Any) -> np.ndarray:
        """Group of each id ``(n,)`` int64."""
        return self._exact.groups_of(ids)

    def ids_of_groups(self, groups: Any) -> np.ndarray:
        """Ids of every vector in the given groups, ascending."""
        return self._exact.ids_of_groups(groups)

    def _ann(self, queries: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(ids, scores)`` per query from the graph, score descending then id ascending."""
        matches = self._graph.search(queries, count, threads=self.threads)
        keys = np.atleast_2d(np.asarray(matches.keys))
        distances = np.atleast_2d(np.asarray(matches.distances))
        counts = np.atleast_1d(np.asarray(getattr(matches, "counts", keys.shape[1])))
        out = []
        for j in range(len(queries)):
            found = keys[j, : counts[j]].astype(np.uint64).view(np.int64)
            scores = (np.float32(1.0) - distances[j, : counts[j]].astype(np.float32)).astype(np.float32)
            order = np.lexsort((found, -scores.astype(np.float64)))
            out.append((found[order], scores[order]))
        return out

    def search(self, queries: Any, k: int) -> list[VectorHits]:
        """Approximate top-k vectors per query (scores: the graph's inner products, float32)."""
        queries = self._exact._check_queries(queries)
        k = _positive_int(k)
        if len(self) == 0:
            return [VectorHits(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in queries]
        return [VectorHits(ids, scores) for ids, scores in self._ann(queries, min(k, len(self)))]

    def search_groups(self, queries: Any, k: int) -> list[GroupHits]:
        """Approximate top-k groups per query: the max over the group's vectors the graph returns."""
        queries = self._exact._check_queries(queries)
        k = _positive_int(k)
        out: list[GroupHits] = []
        for query in queries:
            count = min(len(self), k * self.group_oversample)
            while True:
                ids, scores = self._ann(query[None], count)[0] if count else (np.zeros(0, np.int64), np.zeros(0))
                groups = self._exact.groups_of(ids) if len(ids) else np.zeros(0, np.int64)
                uniq, first = np.unique(groups, return_index=True)  # ids are best first: first = the group's best
                if len(uniq) >= k or count >= len(self):
                    break
                count = min(len(self), count * 2)
            order = np.lexsort((uniq, -scores[first].astype(np.float64)))[:k]
            best = first[order]
            out.append(GroupHits(uniq[order], scores[best].astype(np.float32), ids[best]))
        return out

    def recall_report(self, queries: Any, k: int) -> float:
        """Recall@k of this index against an exact FP32 scan of the same vectors (logged at INFO).

        Args:
            queries: ``(q, dim)`` float32.
            k: the cut-off.

        Returns:
            Mean recall@k over the queries, in ``[0, 1]``.
        """
        recall = recall_at_k(self.search(queries, k), self._exact.search(queries, k), k)
        _logger.info(
            "ANN recall@%d = %.4f over %d queries (ef_search %d, %d vectors)",
            k,
            recall,
            len(np.atleast_2d(queries)),
            self.expansion_search,
            len(self),
        )
        return recall
