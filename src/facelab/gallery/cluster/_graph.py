"""Vectorised graph kernels shared by the clustering algorithms: components and constrained HAC.

Both work on an undirected edge list ``(u, v, w)`` over ``n`` nodes (NumPy only, no Python loop
over nodes or edges), so they scale to millions of faces.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["components", "compact", "average_linkage"]

_logger = logging.getLogger(__name__)


def compact(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``>= 0`` to ``0..K-1`` in order of first appearance; ``-1`` stays ``-1``."""
    labels = np.asarray(labels, np.int64)
    out = np.full(len(labels), -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    values, first, inverse = np.unique(labels[valid], return_index=True, return_inverse=True)
    rank = np.empty(len(values), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(values))
    out[valid] = rank[inverse]
    return out


def components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph (hooking and pointer jumping).

    Args:
        n: number of nodes.
        u: ``(E,)`` int64 edge ends.
        v: ``(E,)`` int64 other ends.

    Returns:
        ``(n,)`` int64 component label of each node: the smallest node index in its component.

    Example:
        >>> components(5, np.array([0, 3]), np.array([1, 4])).tolist()
        [0, 0, 2, 3, 3]
    """
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, np.int64)
    v = np.asarray(v, np.int64)
    while len(u):
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _aggregate(ca: np.ndarray, cb: np.ndarray, s: np.ndarray, c: np.ndarray, n: int) -> tuple:
    """Canonical ``ca < cb``, self-loops dropped, parallel edges summed."""
    lo, hi = np.minimum(ca, cb), np.maximum(ca, cb)
    keep = lo != hi
    key = lo[keep] * n + hi[keep]
    uniq, inv = np.unique(key, return_inverse=True)
    s_out = np.bincount(inv, weights=s[keep], minlength=len(uniq))
    c_out = np.bincount(inv, weights=c[keep], minlength=len(uniq))
    return uniq // n, uniq % n, s_out, c_out


def _settle(
    step: np.ndarray, movers: np.ndarray, best_link: np.ndarray, tag: np.ndarray, cl: np.ndarray, size: int
) -> np.ndarray:
    """Cancel moves that would put two tagged clusters, or a cannot-link, into one cluster.

    Two movers into one hub can conflict with each other (their edges to the hub are allowed); the
    mover with the weaker link to the hub stays behind for this round (ties: the larger id).
    """
    while len(movers):
        cancel = np.zeros(size, bool)
        tagged = movers[tag[movers] >= 0]
        if len(tagged):
            hub = step[tagged]
            order = np.lexsort((tagged, -best_link[tagged], hub))
            hub_sorted = hub[order]
            first = np.r_[True, hub_sorted[1:] != hub_sorted[:-1]]
            cancel[tagged[order][~first]] = True  # one tagged mover per untagged hub
        if len(cl):
            a, b = cl // size, cl % size
            clash = (step[a] == step[b]) & (a != b)
            if clash.any():
                a, b = a[clash], b[clash]
                weaker = np.where((best_link[a] < best_link[b]) | ((best_link[a] == best_link[b]) & (a > b)), a, b)
                cancel[weaker] = True
        if not cancel.any():
            break
        step[cancel] = np.flatnonzero(cancel)
        movers = movers[~cancel[movers]]
    return step


def average_linkage(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    threshold: float,
    *,
    init: np.ndarray | None = None,
    cannot: np.ndarray | None = None,
    exclusive: bool = True,
    max_rounds: int = 10_000,
) -> np.ndarray:
    """Average-linkage agglomerative clustering on a sparse similarity graph, with cannot-links.

    The linkage of two clusters is the mean similarity of the graph edges between them (pairs
    outside every neighbour list are unknown and left out). Merging proceeds in rounds: every
    cluster picks its best neighbour (highest linkage ``>= threshold``, then lowest edge key); a
    cluster *stays* when it has no pick or is the smaller of a reciprocal pair, and every cluster
    whose pick stays joins it (reciprocal pairs as in RAC, plus stars: the many singletons that
    pick one large cluster join it in one round instead of one per round). The edges are summed
    into the merged clusters and the next round starts; it stops when no pair qualifies. A pair of
    clusters holding the two ends of a cannot-link never merges (checked on the clusters of that
    round, so it also holds for every later, larger cluster); neither do two clusters that hold
    different people's ``init`` groups (with ``exclusive``).

    Args:
        n: number of nodes.
        u: ``(E,)`` int64 edge ends (``u != v``).
        v: ``(E,)`` int64 other ends.
        w: ``(E,)`` similarities.
        threshold: merge while the best linkage is at least this (``-inf``: merge every allowed
            connected pair).
        init: ``(n,)`` int64 must-link groups: nodes with the same value ``!= -1`` start as one
            cluster; ``-1`` (or ``None``) starts alone. Groups ``>= 0`` are people (pins); groups
            ``<= -2`` are anonymous (faces known to be together, person unknown).
        cannot: ``(M, 2)`` int64 node pairs that must end in different clusters; a pair inside
            one ``init`` group is ignored (with a log line).
        exclusive: two different groups ``>= 0`` never merge (each is a different person).
        max_rounds: safety stop.

    Returns:
        ``(n,)`` int64 cluster labels ``0..K-1`` (first appearance order).
    """
    if init is None:
        lab = np.arange(n, dtype=np.int64)
    else:
        init = np.asarray(init, np.int64)
        free = init == -1
        base = compact(np.where(free, -1, np.where(init >= 0, 2 * init, -2 * init + 1)))
        n_groups = int(base.max()) + 1 if (~free).any() else 0
        lab = np.where(free, n_groups + np.cumsum(free) - 1, base)
    size = int(lab.max()) + 1 if n else 0
    # tag of each cluster: its init group, or -1; clusters with two different tags never merge
    tag = np.full(max(size, 1), -1, np.int64)
    if init is not None and exclusive:
        tag[lab[init >= 0]] = lab[init >= 0]
    ca, cb, s, c = _aggregate(lab[u], lab[v], np.asarray(w, np.float64), np.ones(len(u)), max(size, 1))
    if cannot is not None and len(cannot):
        cannot = np.asarray(cannot, np.int64).reshape(-1, 2)
        la, lb = lab[cannot[:, 0]], lab[cannot[:, 1]]
        inside = la == lb
        if inside.any():
            _logger.info("%d cannot-links inside one must-link group ignored", int(inside.sum()))
        cl = np.unique(np.minimum(la, lb)[~inside] * size + np.maximum(la, lb)[~inside])
    else:
        cl = np.zeros(0, np.int64)
    mapping = np.arange(size, dtype=np.int64)
    for _ in range(max_rounds):
        if len(ca) == 0:
            break
        key = ca * size + cb
        allowed = (tag[ca] < 0) | (tag[cb] < 0)
        if len(cl):
            allowed &= ~np.isin(key, cl)
        if not allowed.all():
            ca, cb, s, c, key = ca[allowed], cb[allowed], s[allowed], c[allowed], key[allowed]
        link = s / c
        cand = np.flatnonzero(link >= threshold)
        if len(cand) == 0:
            break
        node = np.concatenate([ca[cand], cb[cand]])
        other = np.concatenate([cb[cand], ca[cand]])
        lk = np.concatenate([link[cand], link[cand]])
        ek = np.concatenate([key[cand], key[cand]])
        order = np.lexsort((ek, -lk, node))
        node, other, lk = node[order], other[order], lk[order]
        first = np.r_[True, node[1:] != node[:-1]]
        target = np.full(size, -1, np.int64)
        best_link = np.full(size, -np.inf)
        target[node[first]] = other[first]
        best_link[node[first]] = lk[first]
        has = np.flatnonzero(target >= 0)
        mutual = target[target[has]] == has
        stays = np.ones(size, bool)
        stays[has] = mutual & (has < target[has])
        movers = has[~stays[has] & stays[target[has]]]
        step = np.arange(size, dtype=np.int64)
        step[movers] = target[movers]
        step = _settle(step, movers, best_link, tag, cl, size)
        moved = np.flatnonzero(step != np.arange(size))
        if len(moved) == 0:  # cannot happen with a strict order; guard against float oddities
            e = cand[int(np.argmax(link[cand]))]
            step[cb[e]] = ca[e]
            moved = np.array([cb[e]])
        np.maximum.at(tag, step[moved], tag[moved])
        mapping = step[mapping]
        touched = np.zeros(size, bool)
        touched[moved] = True
        touched[step[moved]] = True
        hit = touched[ca] | touched[cb]
        ra, rb, rs, rc = _aggregate(step[ca[hit]], step[cb[hit]], s[hit], c[hit], size)
        keep = ~hit
        ca = np.concatenate([ca[keep], ra])
        cb = np.concatenate([cb[keep], rb])
        s = np.concatenate([s[keep], rs])
        c = np.concatenate([c[keep], rc])
        if len(cl):
            a, b = step[cl // size], step[cl % size]
            cl = np.unique(np.minimum(a, b) * size + np.maximum(a, b))
    else:
        _logger.warning("average linkage stopped after %d rounds", max_rounds)
    return compact(mapping[lab])
