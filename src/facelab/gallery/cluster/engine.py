"""The clustering engine: people from faces, under constraints, with stable person keys.

Two entry points, both pure functions of plain arrays (:class:`FaceSet`) and a
:class:`ConstraintSet`, returning a :class:`ClusterResult` the store applies:

* :func:`recluster` — a full run over every face: build the kNN graph, run the algorithm, repair
  its clusters so that every constraint holds, then give clusters person keys.
* :func:`add_faces` — new faces join existing people without touching the rest of the library:
  each new face is searched against all faces and joins the best allowed person by the
  algorithm's attach rule (mean / max similarity or vote of its neighbours in that person, at or
  above the algorithm's similarity parameter); the faces left over, together with the unassigned
  faces among their neighbours, are clustered on their own and may found new people.

Constraints in every run:

* faces of one photo are never one person (cannot-link from ``image_ids``), unless the user pinned
  them to one person;
* pinned faces stay with their person; faces of different people's pins are never merged;
* a face never joins a person it was rejected from; apart pairs are never merged;
* with ``keep_named`` (default) every face of a named person counts as pinned: a name is the user's
  confirmation, so re-clustering never dissolves a named person nor takes its faces away (new
  faces may still join it). With ``keep_named=False`` only explicit pins are kept and the name
  follows the cluster holding most of its faces.

Algorithms that honour constraints themselves (``agglomerative``) get them as must-link groups and
cannot-links; for the others a repair step re-partitions every cluster that breaks one — constrained
average linkage restricted to that cluster's own edges, so the algorithm's grouping is kept except
where a constraint forbids it.

**Stable person keys** (full runs). A cluster holding pinned faces takes their person's key. Every
other current person ``P`` keeps its key for the cluster that holds a strict majority of ``P``'s
faces in this run; when several persons claim one cluster, named persons come first, then the one
with more faces there (ties: the lower key), and the others are reported as merged into it. A
person no cluster keeps is reported as dissolved (never a named one under ``keep_named``). All
remaining clusters are new people, numbered by their first face.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery.cluster._graph import average_linkage, compact, components
from facelab.gallery.cluster.algorithms import Clusterer, make_clusterer
from facelab.gallery.cluster.constraints import ConstraintSet, FaceSet
from facelab.gallery.cluster.knn import KnnGraph, NeighborIndex, build_knn, exact_search

__all__ = [
    "Assignment",
    "ClusterResult",
    "CompiledConstraints",
    "compile_constraints",
    "same_image_pairs",
    "recluster",
    "add_faces",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """Where one face goes.

    Attributes:
        face_id: the face.
        person: an existing person's key, or ``None``.
        new_cluster: index of a new person (``0..n_new-1``) when ``person`` is ``None``; both
            ``None``: the face is left unassigned.
    """

    face_id: int
    person: int | None
    new_cluster: int | None


@dataclass
class ClusterResult:
    """The outcome of a run, face by face.

    Attributes:
        face_ids: ``(N,)`` int64, the run's faces in input order.
        persons: ``(N,)`` int64 existing person key of each face, ``-1`` when none.
        new_clusters: ``(N,)`` int64 new-person index of each face, ``-1`` when none.
        n_new: number of new people.
        merged: person key → key of the person that now has its faces (a person absorbed in a
            full run; incremental runs never merge).
        dissolved: unnamed person keys left without faces.
        info: algorithm, parameters, graph backend and recall, timings in seconds.
    """

    face_ids: np.ndarray
    persons: np.ndarray
    new_clusters: np.ndarray
    n_new: int
    merged: dict[int, int] = field(default_factory=dict)
    dissolved: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def labels(self) -> np.ndarray:
        """``(N,)`` int64 one label per person (existing and new), ``-1`` for unassigned faces."""
        code = np.where(
            self.persons >= 0, 2 * self.persons, np.where(self.new_clusters >= 0, 2 * self.new_clusters + 1, -1)
        )
        return compact(code)

    def assignments(self) -> list[Assignment]:
        """One :class:`Assignment` per face."""
        return [
            Assignment(int(f), int(p) if p >= 0 else None, int(c) if c >= 0 else None)
            for f, p, c in zip(self.face_ids, self.persons, self.new_clusters)
        ]

    def changes(self, before: FaceSet) -> list[Assignment]:
        """The assignments that differ from ``before.persons`` (new people always count)."""
        rows = before.rows_of(self.face_ids)
        old = before.persons[rows]
        differ = (self.new_clusters >= 0) | (self.persons != old)
        return [a for a, d in zip(self.assignments(), differ) if d]

    def apply(self, faces: FaceSet, new_keys: Any = None) -> FaceSet:
        """``faces`` with this result's assignment; new people get ``new_keys`` (default: above the max key).

        Args:
            faces: the faces the result was computed for (any order; matched by id).
            new_keys: ``n_new`` keys for the new people, or ``None`` to number them after the
                largest key in sight. A store passes keys from its own sequence, so that a
                deleted person's key is never given out again.

        Returns:
            A :class:`FaceSet` sharing ``faces``' arrays except ``persons``.
        """
        if new_keys is None:
            start = (
                int(max(faces.persons.max(initial=-1), max(self.merged, default=-1), max(faces.named, default=-1))) + 1
            )
            new_keys = np.arange(start, start + self.n_new)
        new_keys = np.asarray(new_keys, np.int64)
        if len(new_keys) != self.n_new:
            raise ConfigError(f"{self.n_new} new people but {len(new_keys)} keys")
        persons = faces.persons.copy()
        rows = faces.rows_of(self.face_ids)
        value = np.where(self.persons >= 0, self.persons, -1)
        has_new = self.new_clusters >= 0
        value[has_new] = new_keys[self.new_clusters[has_new]]
        persons[rows] = value
        return faces.with_persons(persons)


@dataclass
class CompiledConstraints:
    """Constraints of one run, in row numbers of its :class:`FaceSet`.

    Attributes:
        init: ``(N,)`` int64 must-link group of each face: ``>= 0`` the pin group of a person
            (index into ``group_person``), ``<= -2`` an anonymous group (``join`` links without
            a pinned member), ``-1`` none.
        group_person: ``(G,)`` int64 person key of each pin group.
        cannot: ``(M, 2)`` int64 face rows that must be different people.
        rejected: face row → person keys the face may not join.
    """

    init: np.ndarray
    group_person: np.ndarray
    cannot: np.ndarray
    rejected: dict[int, set[int]]


def same_image_pairs(image_ids: np.ndarray) -> np.ndarray:
    """All pairs of rows that share an image.

    Args:
        image_ids: ``(N,)`` image of each face (any comparable values).

    Returns:
        ``(M, 2)`` int64 row pairs ``(a, b)``, ``a < b``.

    Example:
        >>> same_image_pairs(np.array(["x", "y", "x", "x"])).tolist()
        [[0, 2], [0, 3], [2, 3]]
    """
    image_ids = np.asarray(image_ids)
    if len(image_ids) < 2:
        return np.zeros((0, 2), np.int64)
    _, codes = np.unique(image_ids, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    out = []
    for m in np.unique(sizes[sizes > 1]):
        first = starts[sizes == m]
        a, b = np.triu_indices(int(m), 1)
        rows_a = order[(first[:, None] + a[None, :]).reshape(-1)]
        rows_b = order[(first[:, None] + b[None, :]).reshape(-1)]
        out.append(np.stack([np.minimum(rows_a, rows_b), np.maximum(rows_a, rows_b)], axis=1))
    if not out:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def compile_constraints(
    faces: FaceSet, constraints: ConstraintSet | None = None, *, keep_named: bool = True, same_image: bool = True
) -> CompiledConstraints:
    """Turn a :class:`ConstraintSet` (face ids, person keys) into row-level constraints for ``faces``.

    Rows naming faces that are not in ``faces`` are skipped (they may belong to other runs).
    """
    n = len(faces)
    cons = constraints or ConstraintSet()
    pin_person = np.full(n, -1, np.int64)
    if cons.pins:
        ids = np.fromiter(cons.pins.keys(), np.int64, len(cons.pins))
        keys = np.fromiter(cons.pins.values(), np.int64, len(cons.pins))
        present = np.isin(ids, faces.face_ids)
        pin_person[faces.rows_of(ids[present])] = keys[present]
    rejected: dict[int, set[int]] = {}
    if cons.rejects:
        ids = np.fromiter(cons.rejects.keys(), np.int64, len(cons.rejects))
        present = ids[np.isin(ids, faces.face_ids)]
        for face, row in zip(present, faces.rows_of(present)):
            rejected[int(row)] = set(cons.rejects[int(face)])
    if keep_named and faces.named:
        named = np.isin(faces.persons, np.fromiter(faces.named, np.int64, len(faces.named)))
        take = named & (pin_person < 0)
        for row in np.flatnonzero(take):
            if int(faces.persons[row]) not in rejected.get(int(row), ()):
                pin_person[row] = faces.persons[row]
    anonymous = np.full(n, -1, np.int64)
    if cons.together:
        tg = np.array(sorted(cons.together), np.int64)
        present = np.isin(tg[:, 0], faces.face_ids) & np.isin(tg[:, 1], faces.face_ids)
        if present.any():
            a, b = faces.rows_of(tg[present, 0]), faces.rows_of(tg[present, 1])
            comp_of = components(n, a, b)
            members = np.flatnonzero(np.bincount(comp_of, minlength=n)[comp_of] > 1)
            for root in np.unique(comp_of[members]):
                rows = members[comp_of[members] == root]
                keys = np.unique(pin_person[rows][pin_person[rows] >= 0])
                if len(keys) == 1:
                    pin_person[rows] = keys[0]  # joined to a pinned face: that person
                elif len(keys) == 0:
                    anonymous[rows] = root
                else:
                    _logger.warning("join links tie faces pinned to %d different persons; pins win", len(keys))
    group_person, init = np.unique(pin_person[pin_person >= 0], return_inverse=True)
    init_full = np.full(n, -1, np.int64)
    init_full[pin_person >= 0] = init
    free = (init_full == -1) & (anonymous >= 0)
    init_full[free] = -2 - anonymous[free]
    pairs = [same_image_pairs(faces.image_ids)] if same_image else []
    if pairs and len(pairs[0]):
        p = pairs[0]
        same_pin = (init_full[p[:, 0]] != -1) & (init_full[p[:, 0]] == init_full[p[:, 1]])
        pairs[0] = p[~same_pin]  # the user's pin wins over the photo rule
    if cons.apart:
        ap = np.array(sorted(cons.apart), np.int64)
        present = np.isin(ap[:, 0], faces.face_ids) & np.isin(ap[:, 1], faces.face_ids)
        if present.any():
            pairs.append(np.stack([faces.rows_of(ap[present, 0]), faces.rows_of(ap[present, 1])], axis=1))
    if rejected and len(group_person):
        first_row = np.full(len(group_person), -1, np.int64)
        pinned_rows = np.flatnonzero(init_full >= 0)
        first_row[init_full[pinned_rows[::-1]]] = pinned_rows[::-1]
        extra = []
        for row, persons in rejected.items():
            for p in persons:
                g = np.searchsorted(group_person, p)
                if g < len(group_person) and group_person[g] == p:
                    extra.append((row, int(first_row[g])))
        if extra:
            pairs.append(np.array(extra, np.int64))
    cannot = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return CompiledConstraints(init_full, group_person.astype(np.int64), cannot.reshape(-1, 2), rejected)


def _violations(labels: np.ndarray, cannot: np.ndarray) -> np.ndarray:
    """Cannot pairs whose two faces share a label ``>= 0``."""
    if len(cannot) == 0:
        return np.zeros(0, bool)
    la, lb = labels[cannot[:, 0]], labels[cannot[:, 1]]
    return (la >= 0) & (la == lb)


def _repair(labels: np.ndarray, graph: KnnGraph, comp: CompiledConstraints) -> np.ndarray:
    """Re-partition the clusters that break a constraint (see the module docstring)."""
    n = len(labels)
    labels = labels.copy()
    # a pinned face that the algorithm left unassigned gets its own label first
    lone = (labels < 0) & (comp.init != -1)
    top = int(labels.max(initial=-1)) + 1
    labels[lone] = top + np.arange(int(lone.sum()))
    bad_clusters = set(labels[comp.cannot[_violations(labels, comp.cannot), 0]].tolist()) if len(comp.cannot) else set()
    pinned = np.flatnonzero(comp.init != -1)
    if len(pinned):
        group = np.unique(comp.init[pinned], return_inverse=True)[1]
        pairs = np.unique(np.stack([labels[pinned], group], axis=1), axis=0)
        # clusters with two groups, and groups spread over two clusters: all their clusters are dirty
        cl_count = np.bincount(pairs[:, 0], minlength=int(labels.max()) + 1)
        gr_count = np.bincount(pairs[:, 1], minlength=int(group.max()) + 1)
        dirty = (cl_count[pairs[:, 0]] > 1) | (gr_count[pairs[:, 1]] > 1)
        bad_clusters |= set(pairs[dirty, 0].tolist())
        # close over clusters linked by a shared group
        changed = True
        while changed:
            groups = set(pairs[np.isin(pairs[:, 0], list(bad_clusters)), 1].tolist())
            more = set(pairs[np.isin(pairs[:, 1], list(groups)), 0].tolist())
            changed = not more <= bad_clusters
            bad_clusters |= more
    if not bad_clusters:
        return compact(labels)
    rows = np.flatnonzero(np.isin(labels, list(bad_clusters)))
    sub = graph.subgraph(rows)
    u, v, w = sub.edges()
    same = labels[rows[u]] == labels[rows[v]]
    # pin groups bridge clusters (a merge correction): their members start together
    init = comp.init[rows]
    remap = np.full(n, -1, np.int64)
    remap[rows] = np.arange(len(rows))
    cannot = comp.cannot
    inside = (remap[cannot[:, 0]] >= 0) & (remap[cannot[:, 1]] >= 0) if len(cannot) else np.zeros(0, bool)
    sub_cannot = remap[cannot[inside]] if len(cannot) else np.zeros((0, 2), np.int64)
    parts = average_linkage(len(rows), u[same], v[same], w[same], -np.inf, init=init, cannot=sub_cannot)
    labels[rows] = int(labels.max()) + 1 + parts
    _logger.debug("repaired %d clusters (%d faces) into %d", len(bad_clusters), len(rows), int(parts.max()) + 1)
    return compact(labels)


def _finish_labels(labels: np.ndarray, comp: CompiledConstraints, min_size: int) -> np.ndarray:
    """Drop clusters below ``min_size`` that hold no pinned face."""
    valid = labels >= 0
    if not valid.any():
        return labels
    counts = np.bincount(labels[valid])
    has_pin = np.zeros(len(counts), bool)
    has_pin[labels[valid & (comp.init != -1)]] = True
    small = valid & (counts[np.maximum(labels, 0)] < min_size) & ~has_pin[np.maximum(labels, 0)]
    return compact(np.where(small, -1, labels))


def _fit(clusterer: Clusterer, graph: KnnGraph, comp: CompiledConstraints) -> np.ndarray:
    """The algorithm's own labels; the constraints go in only when it honours them natively."""
    if clusterer.NATIVE_CONSTRAINTS:
        return clusterer.fit(graph, comp.init, comp.cannot)
    return clusterer.fit(graph)


def _assign_keys(
    labels: np.ndarray, faces: FaceSet, comp: CompiledConstraints, keep_named: bool
) -> tuple[np.ndarray, np.ndarray, int, dict[int, int], list[int]]:
    """Person keys for the clusters of a full run (the stability rule of the module docstring)."""
    n_clusters = int(labels.max(initial=-1)) + 1
    owner = np.full(n_clusters, -1, np.int64)  # person key that each cluster takes
    pinned = np.flatnonzero((comp.init >= 0) & (labels >= 0))
    owner[labels[pinned]] = comp.group_person[comp.init[pinned]]
    taken = set(owner[owner >= 0].tolist())
    current = faces.persons
    has = (current >= 0) & (labels >= 0)
    pairs, counts = np.unique(np.stack([labels[has], current[has]], axis=1), axis=0, return_counts=True)
    keys, key_counts = np.unique(current[current >= 0], return_counts=True)
    survivors = dict(zip(keys.tolist(), key_counts.tolist()))
    claims = []
    for (cluster, person), count in zip(pairs.tolist(), counts.tolist()):
        if person in taken:
            continue
        is_named = person in faces.named
        if 2 * count > survivors[person] or (is_named and not keep_named):
            claims.append((0 if is_named else 1, -count, person, cluster))
    for _, _, person, cluster in sorted(claims):
        if owner[cluster] < 0 and person not in taken:
            owner[cluster] = person
            taken.add(person)
    persons = np.r_[owner, -1][labels]  # label -1 reads the trailing -1
    # rejected faces leave a cluster whose key they rejected
    labels = labels.copy()
    for row, rejected in comp.rejected.items():
        if persons[row] in rejected:
            persons[row] = -1
            labels[row] = -1
    new_ids = np.full(n_clusters, -1, np.int64)
    free = np.flatnonzero(owner < 0)
    present = np.zeros(n_clusters, bool)
    present[labels[labels >= 0]] = True
    free = free[present[free]]
    if len(free):
        first = np.full(n_clusters, len(labels), np.int64)
        np.minimum.at(first, labels[labels >= 0], np.flatnonzero(labels >= 0))
        free = free[np.argsort(first[free], kind="stable")]
        new_ids[free] = np.arange(len(free))
    new_clusters = np.where(persons < 0, np.r_[new_ids, -1][labels], -1)
    merged: dict[int, int] = {}
    dissolved: list[int] = []
    for person in sorted(set(survivors) - taken):
        rows = np.flatnonzero(current == person)
        dest = persons[rows]
        dest = dest[dest >= 0]
        if len(dest):
            values, cnt = np.unique(dest, return_counts=True)
            merged[int(person)] = int(values[np.argmax(cnt)])
        elif person not in faces.named:
            dissolved.append(int(person))
    return persons, new_clusters, len(free), merged, dissolved


def _resolve(clusterer: str | Clusterer, threshold: float | None, params: dict[str, Any] | None) -> Clusterer:
    if isinstance(clusterer, Clusterer):
        if params:
            raise ConfigError("give parameters either in the Clusterer or in params, not both")
        return clusterer
    if threshold is None and clusterer not in ("immich_defaults", "photoprism_defaults") and not params:
        raise ConfigError(
            f"algorithm {clusterer!r} needs the pack's same-person cosine threshold "
            "(threshold=..., e.g. FaceAnalyzer(...).threshold)"
        )
    return make_clusterer(clusterer, threshold, **(params or {}))


def recluster(
    faces: FaceSet,
    constraints: ConstraintSet | None = None,
    *,
    algorithm: str | Clusterer = "default",
    threshold: float | None = None,
    params: dict[str, Any] | None = None,
    graph: KnnGraph | None = None,
    backend: str = "auto",
    keep_named: bool = True,
    same_image: bool = True,
) -> ClusterResult:
    """Cluster every face of ``faces`` into people (a full run).

    Args:
        faces: the faces, their photos and current assignment.
        constraints: the user's corrections (pins, rejects, apart pairs).
        algorithm: a :data:`~facelab.gallery.cluster.algorithms.CLUSTERERS` name, ``"default"``,
            ``"immich_defaults"``, ``"photoprism_defaults"``, or a configured :class:`Clusterer`.
        threshold: the pack's same-person cosine threshold (the algorithm's parameters derive from it).
        params: parameter overrides for a named algorithm.
        graph: a precomputed kNN graph over ``faces`` (rows in the same order), else built here.
        backend: the graph's neighbour index (see :func:`~facelab.gallery.cluster.knn.build_knn`).
        keep_named: treat every face of a named person as pinned.
        same_image: faces of one photo are never one person.

    Returns:
        The :class:`ClusterResult`.
    """
    clusterer = _resolve(algorithm, threshold, params)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"params": clusterer.params(), "faces": len(faces)}
    if len(faces) == 0:
        empty = np.zeros(0, np.int64)
        return ClusterResult(faces.face_ids, empty, empty, 0, info=info)
    comp = compile_constraints(faces, constraints, keep_named=keep_named, same_image=same_image)
    if graph is None:
        graph = build_knn(faces.embeddings, min(clusterer.k, max(1, len(faces) - 1)), backend=backend)
    elif graph.n != len(faces):
        raise ConfigError(f"the graph has {graph.n} faces, the face set {len(faces)}")
    t1 = time.perf_counter()
    raw = _fit(clusterer, graph, comp)
    t2 = time.perf_counter()
    labels = _finish_labels(_repair(raw, graph, comp), comp, clusterer.min_size)
    persons, new_clusters, n_new, merged, dissolved = _assign_keys(labels, faces, comp, keep_named)
    t3 = time.perf_counter()
    info.update(
        knn={"backend": graph.backend, "k": graph.k, "recall": graph.recall},
        seconds={"knn": t1 - t0, "cluster": t2 - t1, "constraints_and_keys": t3 - t2},
        raw_same_image_violations=int(_violations(raw, same_image_pairs(faces.image_ids)).sum()),
    )
    return ClusterResult(faces.face_ids, persons, new_clusters, n_new, merged, dissolved, info)


def _person_scores(
    mode: str, nbr_person: np.ndarray, nbr_sim: np.ndarray, attach_sim: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate ``(query, person, score)`` triples from each query's neighbours."""
    q, k = nbr_person.shape
    rows = np.repeat(np.arange(q), k)
    person = nbr_person.reshape(-1)
    sim = nbr_sim.reshape(-1).astype(np.float64)
    keep = person >= 0
    if mode == "vote":
        keep &= sim >= attach_sim
    rows, person, sim = rows[keep], person[keep], sim[keep]
    if len(rows) == 0:
        return rows, person, sim
    key_person, inv = np.unique(person, return_inverse=True)
    key = rows * len(key_person) + inv
    uniq, kinv = np.unique(key, return_inverse=True)
    if mode == "mean":
        score = np.bincount(kinv, weights=sim) / np.bincount(kinv)
    elif mode == "max":
        score = np.full(len(uniq), -np.inf)
        np.maximum.at(score, kinv, sim)
    else:
        score = np.bincount(kinv).astype(np.float64)
    q_rows, p = uniq // len(key_person), key_person[uniq % len(key_person)]
    if mode != "vote":
        ok = score >= attach_sim
        return q_rows[ok], p[ok], score[ok]
    return q_rows, p, score


def add_faces(
    faces: FaceSet,
    new: np.ndarray,
    constraints: ConstraintSet | None = None,
    *,
    algorithm: str | Clusterer = "default",
    threshold: float | None = None,
    params: dict[str, Any] | None = None,
    index: NeighborIndex | None = None,
    same_image: bool = True,
) -> ClusterResult:
    """Let new faces join existing people, or found new ones, without re-clustering the library.

    Args:
        faces: the whole library including the new faces (their ``persons`` are ``-1``, unless the
            user already tagged one).
        new: the new faces: a boolean ``(N,)`` mask, or their face ids.
        constraints: the user's corrections.
        algorithm: as for :func:`recluster`.
        threshold: the pack's same-person cosine threshold.
        params: parameter overrides.
        index: a neighbour index whose rows ``0..len(index)-1`` are the first faces of ``faces``
            (the library as the store keeps it, e.g. an ANN index); the faces after them are added
            to it. ``None``: exact search over all faces.
        same_image: faces of one photo are never one person.

    Returns:
        A :class:`ClusterResult` over all faces: existing assignments unchanged; new faces (and
        previously unassigned faces near them) attached to a person, founding a new one, or left
        unassigned.
    """
    clusterer = _resolve(algorithm, threshold, params)
    t0 = time.perf_counter()
    n = len(faces)
    new = np.asarray(new)
    new_rows = np.flatnonzero(new) if new.dtype == bool else faces.rows_of(new)
    if new.dtype == bool and len(new) != n:
        raise ConfigError(f"the new-face mask has {len(new)} entries for {n} faces")
    # constraints only where new faces can meet them: their photos, their links, their pins
    local_rows = new_rows
    if same_image:
        local_rows = np.union1d(local_rows, np.flatnonzero(np.isin(faces.image_ids, faces.image_ids[new_rows])))
    if constraints is not None and (constraints.apart or constraints.together):
        new_ids = set(faces.face_ids[new_rows].tolist())
        linked = {x for pair in constraints.apart | constraints.together if new_ids & set(pair) for x in pair}
        linked_ids = np.array(sorted(linked), np.int64)
        linked_ids = linked_ids[np.isin(linked_ids, faces.face_ids)]
        local_rows = np.union1d(local_rows, faces.rows_of(linked_ids))
    local = faces.subset(local_rows)
    comp = compile_constraints(local, constraints, keep_named=False, same_image=same_image)
    local_of = {int(r): i for i, r in enumerate(local_rows.tolist())}
    persons = faces.persons.copy()
    new_local = np.array([local_of[int(r)] for r in new_rows], np.int64)
    pinned_local = new_local[comp.init[new_local] >= 0] if len(new_local) else new_local
    persons[local_rows[pinned_local]] = comp.group_person[comp.init[pinned_local]]
    queries = new_rows[persons[new_rows] < 0]
    k = clusterer.k
    if index is None:
        nbr, sims = exact_search(faces.embeddings, faces.embeddings[queries], min(k, n - 1), exclude=queries)
    else:
        if len(index) > n:
            raise ConfigError(f"the index holds {len(index)} rows but the face set only {n}")
        if len(index) < n:
            index.add(faces.embeddings[len(index) :])
        nbr, sims = index.search(faces.embeddings[queries], min(k + 1, n))
        self_hit = nbr == queries[:, None]
        nbr = np.where(self_hit, -1, nbr)
        sims = np.where(self_hit, -np.inf, sims).astype(np.float32)
    t1 = time.perf_counter()
    nbr_person = np.where(nbr >= 0, persons[np.maximum(nbr, 0)], -1)
    q_rows, cand_person, score = _person_scores(clusterer.ATTACH, nbr_person, sims, clusterer.attach_sim)
    # greedy, best score first: each face joins one allowed person
    codes = np.unique(local.image_ids, return_inverse=True)[1] if same_image else np.arange(len(local))
    held = persons[local_rows] >= 0
    occupied = set(zip(codes[held].tolist(), persons[local_rows][held].tolist()))
    apart: dict[int, list[int]] = {}
    for a, b in local_rows[comp.cannot].tolist() if len(comp.cannot) else []:
        apart.setdefault(a, []).append(b)
        apart.setdefault(b, []).append(a)
    rejected = {int(local_rows[r]): ps for r, ps in comp.rejected.items()}
    for i in np.lexsort((cand_person, -score)):
        row = int(queries[q_rows[i]])
        person = int(cand_person[i])
        if persons[row] >= 0 or person in rejected.get(row, ()):
            continue
        code = int(codes[local_of[row]])
        if (code, person) in occupied:
            continue
        if any(persons[o] == person for o in apart.get(row, ())):
            continue
        persons[row] = person
        occupied.add((code, person))
    # leftovers: unattached new faces and the unassigned faces among their neighbours
    left_q = persons[queries] < 0
    near = nbr[left_q]
    near = near[near >= 0]
    pool = np.union1d(queries[left_q], near[persons[near] < 0])
    new_clusters = np.full(n, -1, np.int64)
    n_new = 0
    if len(pool) > 1:
        sub = faces.subset(pool)
        sub_graph = build_knn(sub.embeddings, min(k, len(pool) - 1), backend="exact")
        sub_comp = compile_constraints(sub, constraints, keep_named=False, same_image=same_image)
        raw = _fit(clusterer, sub_graph, sub_comp)
        labels = _finish_labels(_repair(raw, sub_graph, sub_comp), sub_comp, clusterer.min_size)
        new_clusters[pool] = labels
        n_new = int(labels.max(initial=-1)) + 1
    t2 = time.perf_counter()
    info = {
        "params": clusterer.params(),
        "faces": n,
        "new_faces": len(new_rows),
        "attached": int(np.count_nonzero(persons[queries] >= 0)),
        "knn": {"backend": "exact" if index is None else getattr(index, "name", type(index).__name__), "k": k},
        "seconds": {"search": t1 - t0, "attach_and_cluster": t2 - t1},
    }
    return ClusterResult(faces.face_ids, persons, new_clusters, n_new, {}, [], info)
