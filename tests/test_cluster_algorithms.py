"""The clustering algorithms on hand-made graphs and on synthetic libraries; the registry and the threshold map."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.cluster import bcubed_prf
from facelab.gallery.cluster import (
    CLUSTERERS,
    DEFAULT_ALGORITHM,
    AverageLinkage,
    ChineseWhispers,
    ImmichRule,
    KnnDBSCAN,
    KnnGraph,
    build_knn,
    make_clusterer,
    merge_cosine,
)
from facelab.gallery.cluster._graph import average_linkage, components
from facelab.gallery.cluster.synthetic import MixtureModel, sample_library
from shared_data import require_module


def graph(rows: dict[int, list[tuple[int, float]]], n: int, k: int = 3) -> KnnGraph:
    """A kNN graph from hand-written neighbour lists (sorted here, best first)."""
    idx = np.full((n, k), -1, np.int64)
    sims = np.full((n, k), -np.inf, np.float32)
    for i, nbrs in rows.items():
        nbrs = sorted(nbrs, key=lambda t: -t[1])[:k]
        for j, (nb, s) in enumerate(nbrs):
            idx[i, j], sims[i, j] = nb, s
    return KnnGraph(idx, sims)


def test_immich_rule_core_faces_found_people() -> None:
    g = graph(
        {
            0: [(1, 0.9), (2, 0.8)],
            1: [(0, 0.9), (2, 0.7)],
            2: [(0, 0.8), (1, 0.7)],
            3: [(4, 0.6), (0, 0.2)],
            4: [(3, 0.6), (2, 0.1)],
        },
        5,
    )
    # 0, 1, 2 have both their 2 nearest within distance 0.5: core, one person; 3 and 4 see only
    # each other (2 matches < 3): deferred, and no person near them: left unassigned
    labels = ImmichRule(max_distance=0.5, min_faces=3).fit(g)
    assert labels.tolist() == [0, 0, 0, -1, -1]


def test_immich_rule_defers_non_core_faces() -> None:
    g = graph(
        {
            0: [(1, 0.7), (4, 0.1)],  # non-core (one match), visited first
            1: [(2, 0.9), (3, 0.85), (0, 0.7)],
            2: [(1, 0.9), (3, 0.8)],
            3: [(1, 0.85), (2, 0.8)],
            4: [(0, 0.1)],  # matches only itself: skipped for good
        },
        5,
    )
    labels = ImmichRule(max_distance=0.5, min_faces=3).fit(g)
    # face 0 waits at the back of the queue and then joins the person 1 founded
    assert labels.tolist() == [0, 0, 0, 0, -1]
    # with min_faces 2 face 0 is core itself and founds the person first
    assert ImmichRule(max_distance=0.5, min_faces=2).fit(g).tolist() == [0, 0, 0, 0, -1]


def test_dbscan_core_border_noise() -> None:
    rows: dict[int, list[tuple[int, float]]] = {i: [] for i in range(11)}
    for group in ((0, 1, 2, 3), (5, 6, 7, 8)):  # two 4-cliques: core faces (3 neighbours + itself)
        for a in group:
            rows[a] += [(b, 0.9) for b in group if b != a]
    rows[3].append((4, 0.85))
    rows[4] = [(3, 0.85)]  # border of the first clique
    rows[9] = [(5, 0.84), (2, 0.82)]  # border of both (2 neighbours + itself < 4): the more similar core
    rows[10] = [(4, 0.3)]  # noise
    labels = KnnDBSCAN(min_sim=0.8, min_samples=4, min_size=1).fit(graph(rows, 11, k=4))
    assert labels[0] == labels[1] == labels[2] == labels[3] == labels[4]
    assert labels[5] == labels[6] == labels[7] == labels[8] == labels[9] != labels[0]
    assert labels[10] == -1
    # photoprism's settings: Euclidean 0.64 on unit vectors
    assert KnnDBSCAN.photoprism_defaults().min_sim == pytest.approx(1 - 0.64**2 / 2)


def test_chinese_whispers_splits_at_the_threshold() -> None:
    clique = [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]
    rows: dict[int, list[tuple[int, float]]] = {i: [] for i in range(6)}
    for a, b in clique:
        rows[a].append((b, 0.95))
        rows[b].append((a, 0.95))
    rows[2].append((3, 0.5))
    rows[3].append((2, 0.5))
    labels = ChineseWhispers(min_sim=0.9).fit(graph(rows, 6))
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]


def test_average_linkage_honours_cannot_links_and_groups() -> None:
    # two tight triangles joined by strong bridges: one cluster, unless a cannot-link forbids it
    u = np.array([0, 0, 1, 3, 3, 4, 2, 1])
    v = np.array([1, 2, 2, 4, 5, 5, 3, 4])
    w = np.array([0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.9, 0.9])
    assert len(set(average_linkage(6, u, v, w, 0.8).tolist())) == 1
    labels = average_linkage(6, u, v, w, 0.8, cannot=np.array([[0, 5]]))
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
    # mean linkage: {0,1,2} vs {3,4,5} has edges 0.9, 0.9 -> merge at 0.9, not at 0.91
    assert len(set(average_linkage(6, u, v, w, 0.91).tolist())) == 2
    # two must-link groups of different people never merge; a free face joins its group
    init = np.array([0, -1, -1, 1, -1, -1])
    labels = average_linkage(6, u, v, w, -np.inf, init=init)
    assert labels[0] != labels[3]


def test_components() -> None:
    assert components(6, np.array([0, 4, 2]), np.array([1, 5, 1])).tolist() == [0, 0, 0, 3, 4, 4]


@pytest.fixture(scope="module")
def library():
    # statistics of the open pack on deepface (fitted by synthetic.fit_mixture, rounded)
    model = MixtureModel(dim=128, common=0.835, identity=0.14, noise=0.025, identity_spread=0.35, image_spread=0.56)
    lib = sample_library(model, 2500, seed=11)
    return lib, build_knn(lib.embeddings, k=16)


@pytest.mark.parametrize(
    ("name", "floor"),
    [
        ("immich", 0.85),
        ("dbscan", 0.9),
        ("hdbscan", 0.9),
        ("agglomerative", 0.95),
        ("chinese_whispers", 0.9),
    ],
)
def test_algorithms_cluster_a_synthetic_library(library, name: str, floor: float) -> None:
    lib, g = library
    if name == "hdbscan" and importlib.util.find_spec("hdbscan") is None:
        require_module("sklearn")  # the fallback implementation
    labels = make_clusterer(name, threshold=0.923).fit(g)
    f = bcubed_prf(lib.labels, labels)[2]
    assert f >= floor, (name, f)


def test_immich_defaults_merge_people_on_the_open_pack(library) -> None:
    # immich's cosine 0.5 is meant for buffalo_l; the open pack's different people are at 0.83,
    # so every neighbour matches and people merge; the pack-derived distance does not
    lib, g = library
    anchor = bcubed_prf(lib.labels, make_clusterer("immich_defaults").fit(g))[0]
    derived = bcubed_prf(lib.labels, make_clusterer("immich", threshold=0.923).fit(g))[0]
    assert anchor < 0.7 < 0.95 < derived


def test_threshold_mapping() -> None:
    assert merge_cosine(0.4, 1 / 6) == pytest.approx(0.5)  # immich's maxDistance on buffalo_l
    assert make_clusterer("immich", threshold=0.4).max_distance == pytest.approx(0.5)
    open_pack = make_clusterer("immich", threshold=0.923)
    assert open_pack.max_distance == pytest.approx(1 - (0.923 + 0.077 / 6))
    agg = make_clusterer("agglomerative", threshold=0.923)
    assert agg.min_link == pytest.approx(0.923 + AverageLinkage.STRICTNESS * 0.077)
    assert make_clusterer("default", threshold=0.4).name == DEFAULT_ALGORITHM
    assert make_clusterer("dbscan", threshold=0.4, min_samples=5).min_samples == 5
    assert set(CLUSTERERS.names()) == {"immich", "dbscan", "hdbscan", "agglomerative", "chinese_whispers"}
    immich = ImmichRule.immich_defaults()
    assert (immich.max_distance, immich.min_faces) == (0.5, 3)


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="unknown clustering algorithm 'kmeans'"):
        make_clusterer("kmeans", threshold=0.4)
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_clusterer("dbscan", threshold=0.4, radius=3)
    with pytest.raises(ConfigError, match=r"\(-1, 1\)"):
        make_clusterer("dbscan", threshold=1.5)
    with pytest.raises(ConfigError, match="cosine similarity"):
        KnnDBSCAN(min_sim=2.0)
    with pytest.raises(ConfigError, match="min_faces"):
        ImmichRule(min_faces=0)
