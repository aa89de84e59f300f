"""Clustering algorithms over one kNN graph, with parameters derived from a pack's threshold.

Every algorithm reads a :class:`~facelab.gallery.cluster.knn.KnnGraph` and returns one label per
face (``-1``: left unassigned). They are registered in :data:`CLUSTERERS` under these names:

=================  ===========================================================================
``immich``         immich's incremental rule (``server/src/services/person.service.ts``,
                   ``handleRecognizeFaces``): a face is *core* when its ``min_faces`` nearest
                   faces, itself included, lie within cosine distance ``max_distance``; faces are
                   visited in order, non-core ones deferred to the end; a face takes the person of
                   its first match that has one, else of the nearest face with a person within
                   ``max_distance``; a core face without one founds a new person.
``dbscan``         DBSCAN on the graph: core when ``min_samples`` faces (itself included) have
                   cosine ``>= min_sim``; clusters are the components of core–core edges; border
                   faces join their most similar core neighbour.
``hdbscan``        scikit-learn's HDBSCAN on the sparse distances ``1 - cos`` of the graph
                   (optional: ``pip install scikit-learn``).
``agglomerative``  average linkage over the graph's edges, merged in rounds of reciprocal best
                   pairs while the mean similarity between two clusters is ``>= min_link``;
                   cannot-links are honoured while merging (the only algorithm that does so
                   natively; the engine repairs the others' clusters afterwards).
                   (Also the constraint repair of every other algorithm.)
``chinese_whispers`` dlib's Chinese Whispers: edges with cosine ``>= min_sim``, every face
                   repeatedly takes the label with the largest (unweighted) vote among its
                   neighbours, in random order (seeded). The default (:data:`DEFAULT_ALGORITHM`).
=================  ===========================================================================

**Parameters from the pack's threshold.** A recogniser's same-person cosine threshold ``τ`` (its
card's ``threshold_cosine``: 0.4 for InsightFace packs, 0.923 for the open dlib pack) fixes the
scale. Each similarity parameter is ``τ + u (1 - τ)`` for a *strictness* ``u`` (0: exactly the
verification threshold; 1: identical embeddings), so one ``u`` gives every pack sensible values:

=================  ===============  =========  ========  ====================================
algorithm          parameter        ``u``      τ = 0.4   τ = 0.923 (open pack)
=================  ===============  =========  ========  ====================================
immich             1 - max_distance 1/6        0.500     0.936 (immich: 0.5 on buffalo_l)
dbscan             min_sim          0.3        0.580     0.946 (min_samples 2)
hdbscan            1 - epsilon      0.3        0.580     0.946 (min_samples 1)
agglomerative      min_link         0.2        0.520     0.938
chinese_whispers   min_sim          0.25       0.550     0.942 (dlib: Euclid 0.5 ≈ u 0.31)
=================  ===============  =========  ========  ====================================

The ``u`` of immich reproduces its shipped ``maxDistance`` 0.5 on buffalo_l (τ 0.4). The others
were chosen by measurement (``benchmarks/bench_cluster.py --sweep``: BCubed F on the deepface
photos, RD and a synthetic library fitted to the open pack, each ``u`` in the middle of the range
that keeps deepface and RD perfect); Chinese Whispers' lands next to dlib's example threshold
(Euclidean 0.5 on raw dlib descriptors of mean squared norm 2.351 is cosine 0.947, ``u`` 0.31).
The anchors' own settings are available unchanged: :meth:`ImmichRule.immich_defaults`
(``max_distance`` 0.5, ``min_faces`` 3), :meth:`KnnDBSCAN.photoprism_defaults` (core 4, Euclidean
radius 0.64 = cosine 0.7952).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery.cluster._graph import average_linkage, compact, components
from facelab.gallery.cluster.knn import KnnGraph
from facelab.registry import Registry

__all__ = [
    "CLUSTERERS",
    "DEFAULT_ALGORITHM",
    "Clusterer",
    "ImmichRule",
    "KnnDBSCAN",
    "HDBSCANClusterer",
    "AverageLinkage",
    "ChineseWhispers",
    "merge_cosine",
    "make_clusterer",
]

_logger = logging.getLogger(__name__)

#: Clustering algorithms by name; each is a dataclass with ``for_threshold(tau, **overrides)``.
CLUSTERERS: Registry = Registry("clustering algorithm")

#: The algorithm ``"default"`` resolves to, chosen by measurement (``benchmarks/bench_cluster.py``,
#: open pack, pack-derived parameters, BCubed F): Chinese Whispers and average linkage are both
#: perfect on the deepface photos and RD; on synthetic libraries fitted to the open pack Chinese
#: Whispers scored 0.9960 / 0.9974 / 0.9907 at 20k / 100k / 1M faces against 0.9923 / 0.9965 /
#: 0.9865 (the 1M graph is approximate, and average linkage over a graph with missing edges
#: over-merges), and ran faster (66 s against 91 s at 1M).
DEFAULT_ALGORITHM = "chinese_whispers"

_C = TypeVar("_C", bound="Clusterer")


def merge_cosine(threshold: float, strictness: float) -> float:
    """The cosine similarity ``τ + u (1 - τ)`` for a pack threshold ``τ`` and strictness ``u``.

    Example:
        >>> round(merge_cosine(0.4, 1 / 6), 3)
        0.5
    """
    tau = float(threshold)
    if not -1.0 < tau < 1.0:
        raise ConfigError(f"a same-person cosine threshold must lie in (-1, 1), got {threshold!r}")
    return tau + float(strictness) * (1.0 - tau)


@dataclass
class Clusterer:
    """Base of the algorithms: the fields every one has.

    Attributes:
        k: neighbours per face the algorithm wants in the graph.
        min_size: clusters smaller than this are left unassigned (their faces get ``-1``).
    """

    name: ClassVar[str] = ""
    #: strictness ``u`` of the pack-derived similarity parameter
    STRICTNESS: ClassVar[float] = 0.0
    #: how a new face is attached to a person in incremental mode: "mean" | "max" | "vote"
    ATTACH: ClassVar[str] = "mean"
    #: whether :meth:`fit` honours must-link groups and cannot-links itself
    NATIVE_CONSTRAINTS: ClassVar[bool] = False
    #: the field holding the pack-derived similarity parameter (and, by default, :attr:`attach_sim`)
    SIM_FIELD: ClassVar[str] = "min_sim"

    k: int = 16
    min_size: int = 2

    @classmethod
    def for_threshold(cls: type[_C], threshold: float, **overrides: Any) -> _C:
        """The algorithm with ``SIM_FIELD = τ + STRICTNESS (1 - τ)`` for a pack threshold ``τ`` (unless overridden)."""
        overrides.setdefault(cls.SIM_FIELD, merge_cosine(threshold, cls.STRICTNESS))
        return cls(**overrides)

    @property
    def attach_sim(self) -> float:
        """Similarity at or above which a new face may join a person incrementally (the ``SIM_FIELD`` value)."""
        return float(getattr(self, self.SIM_FIELD))

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """Cluster the faces of ``graph``.

        Args:
            graph: the kNN graph (``graph.k >= self.k`` is not required; fewer neighbours are used).
            init: ``(N,)`` must-link groups (``-1``: none; ``>= 0`` a person's pins, ``<= -2``
                anonymous); used by native algorithms only.
            cannot: ``(M, 2)`` cannot-link face rows; used by native algorithms only.

        Returns:
            ``(N,)`` int64 labels ``0..K-1``, ``-1`` for unassigned faces.
        """
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dictionary, with the algorithm's name."""
        return {"algorithm": self.name, **asdict(self)}

    def _drop_small(self, labels: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        labels = np.asarray(labels, np.int64)
        valid = labels >= 0
        if not valid.any():
            return np.full(len(labels), -1, np.int64)
        counts = np.bincount(labels[valid])
        small = valid & (counts[np.maximum(labels, 0)] < self.min_size)
        if init is not None:  # a must-link group is kept whatever its size
            small &= np.asarray(init) == -1
        return compact(np.where(small, -1, labels))


def _check_sim(value: float, what: str) -> float:
    value = float(value)
    if not -1.0 <= value <= 1.0:
        raise ConfigError(f"{what} is a cosine similarity in [-1, 1], got {value}")
    return value


@CLUSTERERS.register("immich")
@dataclass
class ImmichRule(Clusterer):
    """immich's incremental DBSCAN-like rule (see the module docstring).

    Attributes:
        max_distance: cosine distance ``1 - cos`` of a match (immich default 0.5).
        min_faces: matches, the face itself included, that make a core face (immich default 3).
    """

    name: ClassVar[str] = "immich"
    STRICTNESS: ClassVar[float] = 1.0 / 6.0
    ATTACH: ClassVar[str] = "max"

    max_distance: float = 0.5
    min_faces: int = 3
    min_size: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_distance <= 2.0:
            raise ConfigError(f"max_distance is a cosine distance in [0, 2], got {self.max_distance}")
        if self.min_faces < 1:
            raise ConfigError(f"min_faces must be >= 1, got {self.min_faces}")

    @classmethod
    def for_threshold(cls, threshold: float, **overrides: Any) -> ImmichRule:
        """``max_distance = 1 - (τ + (1 - τ) / 6)``: immich's 0.5 on buffalo_l (τ = 0.4)."""
        overrides.setdefault("max_distance", 1.0 - merge_cosine(threshold, cls.STRICTNESS))
        return cls(**overrides)

    @classmethod
    def immich_defaults(cls) -> ImmichRule:
        """Immich's shipped settings: ``maxDistance`` 0.5, ``minFaces`` 3 (any model)."""
        return cls(max_distance=0.5, min_faces=3)

    @property
    def attach_sim(self) -> float:
        """``1 - max_distance``."""
        return 1.0 - self.max_distance

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """Faces in row order (immich's queue), non-core ones deferred to the back.

        immich's second query (nearest face with a person within ``max_distance``, any rank) is
        answered from the graph's ``k`` neighbours.
        """
        n = graph.n
        min_sim = 1.0 - self.max_distance
        within = (graph.sims >= min_sim) & (graph.indices >= 0)
        head = max(0, self.min_faces - 1)
        matches = 1 + within[:, :head].sum(axis=1)
        person = np.full(n, -1, np.int64)
        rows_within = [row[ok].tolist() for row, ok in zip(graph.indices, within)]
        next_person = 0
        queue = deque((i, False) for i in range(n))
        while queue:
            i, deferred = queue.popleft()
            if person[i] >= 0:
                continue
            if self.min_faces > 1 and matches[i] <= 1:
                continue  # "only matched the face itself": skipped for good
            core = matches[i] >= self.min_faces
            if not core and not deferred:
                queue.append((i, True))
                continue
            found = -1
            for j in rows_within[i]:  # first the top matches, then any neighbour with a person
                if person[j] >= 0:
                    found = int(person[j])
                    break
            if found < 0 and core:
                found = next_person
                next_person += 1
            if found >= 0:
                person[i] = found
        return self._drop_small(person)


@CLUSTERERS.register("dbscan")
@dataclass
class KnnDBSCAN(Clusterer):
    """DBSCAN on the kNN graph.

    Attributes:
        min_sim: neighbourhood radius as a cosine similarity (``eps = 1 - min_sim`` in cosine
            distance, ``sqrt(2 - 2 min_sim)`` Euclidean on unit vectors).
        min_samples: faces within the radius, the face itself included, that make a core face.
    """

    name: ClassVar[str] = "dbscan"
    STRICTNESS: ClassVar[float] = 0.3
    ATTACH: ClassVar[str] = "max"

    min_sim: float = 0.5
    min_samples: int = 2

    def __post_init__(self) -> None:
        self.min_sim = _check_sim(self.min_sim, "min_sim")
        if self.min_samples < 1:
            raise ConfigError(f"min_samples must be >= 1, got {self.min_samples}")
        self.k = max(self.k, self.min_samples - 1)

    @classmethod
    def photoprism_defaults(cls) -> KnnDBSCAN:
        """PhotoPrism's batch settings: core 4, Euclidean radius 0.64 (cosine ``1 - 0.64²/2``)."""
        return cls(min_sim=1.0 - 0.64**2 / 2.0, min_samples=4)

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """Core faces, core–core components, border faces to their best core neighbour."""
        n = graph.n
        within = (graph.sims >= self.min_sim) & (graph.indices >= 0)
        core = 1 + within.sum(axis=1) >= self.min_samples
        rows = np.repeat(np.arange(n), graph.k).reshape(n, graph.k)
        cc = within & core[:, None] & core[np.maximum(graph.indices, 0)]
        comp = components(n, rows[cc], graph.indices[cc])
        labels = np.where(core, comp, -1)
        border = np.flatnonzero(~core)
        if len(border):
            cand = within[border] & core[np.maximum(graph.indices[border], 0)]
            has = cand.any(axis=1)
            first = np.argmax(cand, axis=1)  # neighbours are sorted: the first is the most similar
            b = border[has]
            labels[b] = comp[graph.indices[b, first[has]]]
        return self._drop_small(compact(labels))


@CLUSTERERS.register("hdbscan")
@dataclass
class HDBSCANClusterer(Clusterer):
    """scikit-learn's HDBSCAN on the graph's sparse cosine distances (optional dependency).

    Attributes:
        min_cluster_size: HDBSCAN's smallest cluster (default 2: a person seen twice).
        min_samples: neighbours of the core distance (default 1).
        min_sim: ``cluster_selection_epsilon = 1 - min_sim``: clusters closer than this are not split.
        allow_single_cluster: a library of one person is one cluster (HDBSCAN's own default
            ``False`` leaves every face of RD's five photos unassigned).
    """

    name: ClassVar[str] = "hdbscan"
    STRICTNESS: ClassVar[float] = 0.3
    ATTACH: ClassVar[str] = "max"

    min_cluster_size: int = 2
    min_samples: int = 1
    min_sim: float = 0.5
    allow_single_cluster: bool = True

    def __post_init__(self) -> None:
        self.min_sim = _check_sim(self.min_sim, "min_sim")
        if self.min_cluster_size < 2 or self.min_samples < 1:
            raise ConfigError("HDBSCAN needs min_cluster_size >= 2 and min_samples >= 1")

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """HDBSCAN with ``metric="precomputed"`` on the symmetric sparse graph.

        Uses the ``hdbscan`` package when installed, else scikit-learn's ``HDBSCAN``.
        """
        try:
            import scipy.sparse as sparse
        except ImportError as exc:
            raise ConfigError(f"the hdbscan algorithm needs scipy: pip install scipy ({exc})") from exc
        n = graph.n
        if n < 2:
            return np.full(n, -1, np.int64)
        u, v, w = graph.edges()
        d = np.maximum(1.0 - w.astype(np.float64), 1e-9)
        # join the components with long edges: HDBSCAN's spanning tree needs a connected graph
        comp = components(n, u, v)
        roots = np.unique(comp)
        if len(roots) > 1:
            u = np.r_[u, roots[:-1]]
            v = np.r_[v, roots[1:]]
            d = np.r_[d, np.full(len(roots) - 1, 4.0)]
        matrix = sparse.coo_matrix((np.r_[d, d], (np.r_[u, v], np.r_[v, u])), shape=(n, n)).tocsr()
        options = {
            "metric": "precomputed",
            "min_cluster_size": min(self.min_cluster_size, n),
            "min_samples": min(self.min_samples, max(1, graph.k)),
            "cluster_selection_epsilon": max(0.0, 1.0 - self.min_sim),
            "allow_single_cluster": self.allow_single_cluster,
        }
        try:
            import hdbscan

            labels = hdbscan.HDBSCAN(**options).fit_predict(matrix)
        except ImportError:
            try:
                from sklearn.cluster import HDBSCAN
            except ImportError as exc:
                raise ConfigError(
                    f"the hdbscan algorithm needs the hdbscan or scikit-learn package: pip install hdbscan ({exc})"
                ) from exc
            labels = HDBSCAN(copy=True, **options).fit_predict(matrix)
        return self._drop_small(compact(np.asarray(labels, np.int64)))


@CLUSTERERS.register("agglomerative")
@dataclass
class AverageLinkage(Clusterer):
    """Average-linkage agglomerative clustering on the kNN graph, cannot-link aware.

    Attributes:
        min_link: merge while the mean similarity between two clusters is at least this.
    """

    name: ClassVar[str] = "agglomerative"
    STRICTNESS: ClassVar[float] = 0.2
    ATTACH: ClassVar[str] = "mean"
    NATIVE_CONSTRAINTS: ClassVar[bool] = True
    SIM_FIELD: ClassVar[str] = "min_link"  # a face joins a person whose mean similarity to it reaches it

    min_link: float = 0.4

    def __post_init__(self) -> None:
        self.min_link = _check_sim(self.min_link, "min_link")

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """Constrained average linkage (see :func:`facelab.gallery.cluster._graph.average_linkage`)."""
        g = graph if graph.k <= self.k else KnnGraph(graph.indices[:, : self.k], graph.sims[:, : self.k])
        u, v, w = g.edges()
        labels = average_linkage(g.n, u, v, w, self.min_link, init=init, cannot=cannot)
        return self._drop_small(labels, init)


@CLUSTERERS.register("chinese_whispers")
@dataclass
class ChineseWhispers(Clusterer):
    """Chinese Whispers on the thresholded kNN graph (dlib's ``chinese_whispers``).

    Attributes:
        min_sim: edges with cosine at least this.
        iterations: passes over all faces (dlib: 100; stops early once no label changes).
        weighted: vote with the similarities instead of 1 per edge (dlib: unweighted).
        batches: each pass updates the faces in this many random batches (a face sees the labels
            its neighbours got in earlier batches of the pass, as in the sequential original).
        seed: random order seed.
    """

    name: ClassVar[str] = "chinese_whispers"
    STRICTNESS: ClassVar[float] = 0.25
    ATTACH: ClassVar[str] = "vote"

    min_sim: float = 0.5
    iterations: int = 100
    weighted: bool = False
    batches: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        self.min_sim = _check_sim(self.min_sim, "min_sim")
        if self.iterations < 1 or self.batches < 1:
            raise ConfigError("iterations and batches must be >= 1")

    def fit(self, graph: KnnGraph, init: np.ndarray | None = None, cannot: np.ndarray | None = None) -> np.ndarray:
        """Label propagation by majority vote, in random batches."""
        n = graph.n
        u, v, w = graph.edges(self.min_sim)
        src = np.concatenate([u, v])
        dst = np.concatenate([v, u])
        wt = np.concatenate([w, w]).astype(np.float64) if self.weighted else np.ones(2 * len(u))
        labels = np.arange(n, dtype=np.int64)
        if len(src) == 0:
            return self._drop_small(labels)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.iterations):
            batch_of = rng.integers(0, self.batches, n)
            order = np.argsort(batch_of[src], kind="stable")
            s_sorted, d_sorted, w_sorted = src[order], dst[order], wt[order]
            bounds = np.searchsorted(batch_of[s_sorted], np.arange(self.batches + 1))
            changed = 0
            for b in range(self.batches):
                lo, hi = bounds[b], bounds[b + 1]
                if lo == hi:
                    continue
                s_b, lab_b = s_sorted[lo:hi], labels[d_sorted[lo:hi]]
                key = s_b * n + lab_b
                uniq, inv = np.unique(key, return_inverse=True)
                votes = np.bincount(inv, weights=w_sorted[lo:hi])
                node, lab = uniq // n, uniq % n
                best = np.lexsort((lab, -votes, node))
                node, lab = node[best], lab[best]
                first = np.r_[True, node[1:] != node[:-1]]
                node, lab = node[first], lab[first]
                changed += int(np.count_nonzero(labels[node] != lab))
                labels[node] = lab
            if changed == 0:
                break
        return self._drop_small(compact(labels))


def make_clusterer(name: str = "default", threshold: float | None = None, **overrides: Any) -> Clusterer:
    """An algorithm by name, with parameters from the pack threshold and explicit overrides.

    Args:
        name: a :data:`CLUSTERERS` name, ``"default"`` (:data:`DEFAULT_ALGORITHM`), or the
            anchors' settings ``"immich_defaults"`` / ``"photoprism_defaults"``.
        threshold: the pack's same-person cosine threshold ``τ`` (needed unless every similarity
            parameter is given in ``overrides``).
        overrides: field values that replace the derived ones (e.g. ``k=32``).

    Raises:
        ConfigError: an unknown name or field, or a missing threshold.
    """
    if name == "default":
        name = DEFAULT_ALGORITHM
    if name == "immich_defaults":
        return _replace(ImmichRule.immich_defaults(), overrides)
    if name == "photoprism_defaults":
        return _replace(KnnDBSCAN.photoprism_defaults(), overrides)
    if name not in CLUSTERERS:
        raise ConfigError(
            f"unknown clustering algorithm {name!r}; known: "
            f"{CLUSTERERS.names() + ['default', 'immich_defaults', 'photoprism_defaults']}"
        )
    cls = CLUSTERERS.get(name)
    _check_parameters(name, cls, overrides)
    if threshold is None:
        try:
            return cls(**overrides)
        except TypeError as exc:  # pragma: no cover - every field has a default
            raise ConfigError(f"{name}: {exc}") from exc
    return cls.for_threshold(threshold, **overrides)


def _check_parameters(name: str, algorithm: Any, overrides: dict[str, Any]) -> None:
    """Raise :class:`~facelab.errors.ConfigError` for an override that is not a field of ``algorithm``."""
    known = {f.name for f in fields(algorithm)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown parameter(s) {unknown}; known: {sorted(known)}")


def _replace(clusterer: Clusterer, overrides: dict[str, Any]) -> Clusterer:
    _check_parameters(clusterer.name, clusterer, overrides)
    values = asdict(clusterer)
    values.update(overrides)
    return type(clusterer)(**values)
