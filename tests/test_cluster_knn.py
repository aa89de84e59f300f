"""The kNN graph: exact search against brute force, the selection kernel, the ANN indexes' recall."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.gallery.cluster.knn import (
    KnnGraph,
    _block_topk,
    build_knn,
    exact_search,
    make_neighbor_index,
)
from facelab.gallery.cluster.synthetic import MixtureModel, sample_library


def _brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


@pytest.mark.parametrize(("rows", "cols"), [(5, 40), (9, 1056), (3, 32768), (4, 4001)])
def test_block_topk_is_exact(rows: int, cols: int) -> None:
    rng = np.random.default_rng(cols)
    scores = rng.standard_normal((rows, cols)).astype(np.float32)
    idx, vals = _block_topk(scores, 16 if cols > 16 else 4)
    k = idx.shape[1]
    np.testing.assert_array_equal(np.sort(vals, 1), np.sort(scores, 1)[:, -k:])
    np.testing.assert_array_equal(np.take_along_axis(scores, idx, 1), vals)


def test_exact_graph_matches_brute_force_across_blocks() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((700, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ref_idx, ref_sim = _brute(x, 7)
    # small blocks so that the merge across query and base blocks is exercised
    idx, sim = exact_search(x, x, 7, exclude=np.arange(700), query_block=64, base_block=96)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, ref_sim, atol=1e-5)
    graph = build_knn(x * 3.0, k=7)  # not unit rows: normalised
    np.testing.assert_array_equal(graph.indices, ref_idx)
    assert graph.backend == "exact" and graph.recall is None


def test_small_sets_pad_with_minus_one() -> None:
    x = np.eye(3, 5, dtype=np.float32)
    g = build_knn(x, k=4)
    assert g.indices.shape == (3, 4)
    assert (g.indices[:, 2:] == -1).all() and np.isneginf(g.sims[:, 2:]).all()
    assert (g.indices[:, :2] != np.arange(3)[:, None]).all()  # never itself


def test_edges_and_subgraph() -> None:
    idx = np.array([[1, 2], [0, 2], [1, -1]])
    sims = np.array([[0.9, 0.5], [0.9, 0.7], [0.7, -np.inf]], np.float32)
    g = KnnGraph(idx, sims)
    u, v, w = g.edges()
    assert list(zip(u.tolist(), v.tolist(), np.round(w.astype(float), 3).tolist())) == [
        (0, 1, 0.9),
        (0, 2, 0.5),
        (1, 2, 0.7),
    ]
    u, v, _ = g.edges(min_sim=0.6)
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1), (1, 2)]
    sub = g.subgraph(np.array([2, 1]))  # row 0 = face 2, row 1 = face 1
    assert sub.indices.tolist() == [[1, -1], [0, -1]]
    np.testing.assert_allclose(sub.sims[:, 0], [0.7, 0.7])


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="zero vector"):
        build_knn(np.zeros((3, 4)), k=2)
    with pytest.raises(ConfigError, match=r"\(N, D\)"):
        build_knn(np.zeros(4), k=2)
    with pytest.raises(ConfigError, match="NaN"):
        build_knn(np.full((2, 2), np.nan), k=1)
    with pytest.raises(ConfigError, match="positive integer"):
        build_knn(np.eye(3), k=0)
    with pytest.raises(ConfigError, match="unknown neighbour index"):
        build_knn(np.eye(3), k=1, backend="annoy")


@pytest.fixture(scope="module")
def library_512():
    model = MixtureModel(dim=512, common=0.83, identity=0.14, noise=0.03, identity_spread=0.4, image_spread=0.5)
    return sample_library(model, 6000, seed=5)


def _edge_recall(graph: KnnGraph, x: np.ndarray, min_sim: float, rows: np.ndarray) -> float:
    ref, ref_sim = exact_search(x, x[rows], graph.k, exclude=rows)
    hits = [
        np.isin(ref[i][ref_sim[i] >= min_sim], graph.indices[r]).mean()
        for i, r in enumerate(rows)
        if (ref_sim[i] >= min_sim).any()
    ]
    return float(np.mean(hits))


def test_numpy_ivf_finds_the_close_neighbours(library_512) -> None:
    x = library_512.embeddings
    g = build_knn(x, k=16, backend="ivf", recall_sample=300, cell_size=256, nprobe=8)
    assert g.backend == "ivf" and g.recall is not None and 0.5 < g.recall <= 1.0
    # the 300 faces the recall estimate samples (seed 0), counted here by membership in the exact top 16
    rows = np.random.default_rng(0).choice(len(x), 300, replace=False)
    assert g.recall == pytest.approx(_edge_recall(g, x, -1.0, rows), abs=1e-9)
    # the edges a clustering uses (above the open pack's 0.923) are found almost all
    assert _edge_recall(g, x, 0.93, rows) > 0.95
    cells = np.bincount(g.info["index"]._cell)
    assert cells.max() <= 1.25 * len(x) / len(cells) + 1  # balanced: no cell swallows the library


def test_ivf_additions_are_searched_without_refilling(library_512) -> None:
    x = library_512.embeddings
    index = make_neighbor_index("ivf", 512, cell_size=256)
    index.add(x[:5000])
    cells = index._cell.copy()
    index.add(x[5000:5050])  # a small addition waits in the exactly searched tail
    assert len(index) == 5050 and np.array_equal(index._cell, cells)
    idx, sim = index.search(x[5000:5050], 3)
    assert (idx[:, 0] == np.arange(5000, 5050)).all()  # each finds itself first
    ref_idx, ref_sim = exact_search(x[:5050], x[5000:5050], 3)
    close = ref_sim[:, 1] >= 0.93  # a photo of the same person exists: it is found
    assert close.sum() > 10 and np.mean([ref_idx[i, 1] in idx[i] for i in np.flatnonzero(close)]) > 0.95
    index.add(x[5050:6000])  # past 5 %: the tail joins the cells
    assert len(index._tail) == 0 and len(index._cell) == 6000


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
def test_optional_ann_backends_report_recall(library_512, backend: str) -> None:
    module = {"faiss": "faiss", "usearch": "usearch"}[backend]
    if importlib.util.find_spec(module) is None:
        with pytest.raises(ConfigError, match="pip install"):
            make_neighbor_index(backend, 8)
        return
    x = library_512.embeddings[:2000]
    g = build_knn(x, k=8, backend=backend, recall_sample=200)
    assert g.backend == backend and g.recall is not None and 0.0 < g.recall <= 1.0
    assert (g.indices != np.arange(len(x))[:, None]).all()
    assert (np.diff(g.sims, axis=1) <= 1e-6).all()  # best first
