"""Exact FP32 search: top-k vectors and persons against a brute-force reference, mutations, errors."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.gallery import search
from facelab.gallery.search import ExactIndex, GroupHits, VectorHits, make_index, recall_at_k

# Larger than one score block, so the sampled-threshold path runs (smaller indexes score in one block).
_BIG = 40_000


def tie_vectors(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Unit vectors with four entries of +-1/2: every dot is a multiple of 1/4, exact in float32, many ties."""
    out = np.zeros((n, dim), np.float32)
    cols = np.argsort(rng.random((n, dim)), axis=1)[:, :4]
    np.put_along_axis(out, cols, rng.choice(np.array([-0.5, 0.5], np.float32), (n, 4)), axis=1)
    return out


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _arrays(store: dict[int, tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array(sorted(store), np.int64)
    vectors = np.array([store[i][0] for i in ids.tolist()], np.float64).reshape(len(ids), -1)
    groups = np.array([store[i][1] for i in ids.tolist()], np.int64)
    return ids, vectors, groups


def reference_vectors(arrays: tuple, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Brute force in float64 over every vector: (id, score), score descending then id ascending."""
    ids, vectors, _ = arrays
    scores = vectors @ query.astype(np.float64)
    order = np.lexsort((ids, -scores))[:k]
    return list(zip(ids[order].tolist(), scores[order].tolist()))


def reference_groups(arrays: tuple, query: np.ndarray, k: int) -> list[tuple[int, float, int]]:
    """Brute force: (group, score, best vector id); group score = max, lowest id at the max; groups by score, id."""
    ids, vectors, groups = arrays
    scores = vectors @ query.astype(np.float64)
    order = np.lexsort((ids, -scores))  # every vector, best first
    uniq, first = np.unique(groups[order], return_index=True)  # first occurrence = the group's best vector
    best = order[first]
    ranked = np.lexsort((uniq, -scores[best]))[:k]
    return [(int(uniq[r]), float(scores[best[r]]), int(ids[best[r]])) for r in ranked]


def assert_same_as_reference(index: ExactIndex, store: dict, queries: np.ndarray, k: int) -> None:
    hits = index.search(queries, k)
    groups = index.search_groups(queries, k)
    assert len(hits) == len(groups) == len(queries)
    arrays = _arrays(store)
    for query, vh, gh in zip(queries, hits, groups):
        want = reference_vectors(arrays, query, k)
        assert vh.ids.dtype == np.int64 and vh.scores.dtype == np.float32
        assert vh.ids.tolist() == [vid for vid, _ in want]
        np.testing.assert_array_equal(vh.scores, np.array([s for _, s in want], np.float32))
        want_g = reference_groups(arrays, query, k)
        assert gh.groups.dtype == np.int64 and gh.vector_ids.dtype == np.int64 and gh.scores.dtype == np.float32
        assert gh.groups.tolist() == [g for g, _, _ in want_g]
        assert gh.vector_ids.tolist() == [vid for _, _, vid in want_g]
        np.testing.assert_array_equal(gh.scores, np.array([s for _, s, _ in want_g], np.float32))


@pytest.mark.parametrize("n", [300, _BIG])
def test_exact_ties_match_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    vectors = tie_vectors(rng, n)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # ids not in row order
    groups = rng.integers(0, n // 4, n)
    index = make_index("exact", 16)
    index.add(ids, vectors, groups)
    store = {int(i): (v, int(g)) for i, v, g in zip(ids, vectors, groups)}
    queries = np.concatenate([tie_vectors(rng, 3), vectors[:2]])
    assert_same_as_reference(index, store, queries, 7)
    assert_same_as_reference(index, store, queries[:1], 1)


def test_random_vectors_scores_and_order() -> None:
    rng = np.random.default_rng(1)
    n, dim = 5000, 64
    vectors = unit_vectors(rng, n, dim)
    index = ExactIndex(dim)
    index.add(np.arange(n) + 100, vectors, np.arange(n) // 5)
    queries = unit_vectors(rng, 70, dim)  # more than one pass of queries
    reference = vectors.astype(np.float64) @ queries.astype(np.float64).T
    for j, hits in enumerate(index.search(queries, 10)):
        want = np.sort(reference[:, j])[::-1][:10]
        np.testing.assert_allclose(hits.scores, want, atol=1e-6)
        np.testing.assert_allclose(reference[hits.ids - 100, j], want, atol=1e-6)
        assert np.all(np.diff(hits.scores) <= 0)


def test_mutations_keep_search_exact() -> None:
    rng = np.random.default_rng(2)
    index = ExactIndex(16, capacity=4)  # grows several times
    store: dict[int, tuple[np.ndarray, int]] = {}
    next_id = 0
    for step in range(12):
        n = int(rng.integers(1, 400))
        vectors = tie_vectors(rng, n)
        ids = np.arange(next_id, next_id + n, dtype=np.int64)
        next_id += n
        groups = rng.integers(0, 60, n)
        index.add(ids, vectors, groups)
        store.update({int(i): (v, int(g)) for i, v, g in zip(ids, vectors, groups)})
        victims = rng.choice(sorted(store), size=min(len(store), 50), replace=False)
        asked = np.concatenate([victims, [10**12]])  # an unknown id is ignored
        assert index.remove(asked) == len(victims)
        for v in victims:
            del store[int(v)]
        if step % 3 == 0:
            gone = [int(g) for g in rng.choice(60, 3, replace=False)]
            expected = sum(1 for _, g in store.values() if g in gone)
            assert index.remove_groups(gone) == expected
            store = {i: vg for i, vg in store.items() if vg[1] not in gone}
        if step % 4 == 1 and store:
            moved = rng.choice(sorted(store), size=min(20, len(store)), replace=False)
            index.set_groups(moved, np.full(len(moved), 999))
            for m in moved:
                store[int(m)] = (store[int(m)][0], 999)
        assert len(index) == len(store)
        assert index.ids().tolist() == sorted(store)
        some = sorted(store)[:30]
        assert index.groups_of(some).tolist() == [store[i][1] for i in some]
        assert_same_as_reference(index, store, tie_vectors(rng, 2), 5)
    index.clear()
    assert len(index) == 0 and index.ids().tolist() == []
    assert index.search(tie_vectors(rng, 1), 3)[0].ids.tolist() == []
    index.add(np.array([5]), tie_vectors(rng, 1), np.array([1]))  # usable after clear
    assert index.search_groups(tie_vectors(rng, 1), 3)[0].groups.tolist() == [1]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # FP16 takes the parallel block path
def test_fewer_groups_than_k_returns_them_all(precision: str) -> None:
    rng = np.random.default_rng(3)
    vectors = tie_vectors(rng, _BIG)
    groups = rng.integers(0, 4, _BIG)
    index = ExactIndex(16, precision=precision)
    index.add(np.arange(_BIG), vectors, groups)
    store = {i: (v, int(g)) for i, (v, g) in enumerate(zip(vectors, groups))}
    assert_same_as_reference(index, store, tie_vectors(rng, 2), 10)
    assert len(index.search_groups(tie_vectors(rng, 1), 10)[0].groups) == 4


def test_k_larger_than_index_and_single_query_vector() -> None:
    rng = np.random.default_rng(4)
    index = ExactIndex(16)
    vectors = tie_vectors(rng, 3)
    index.add([7, 8, 9], vectors, [1, 1, 2])
    hits = index.search(vectors[0], 10)  # a (dim,) vector is one query
    assert len(hits) == 1 and sorted(hits[0].ids.tolist()) == [7, 8, 9]
    groups = index.search_groups(vectors[:1], 10)[0]
    assert isinstance(groups, GroupHits) and sorted(groups.groups.tolist()) == [1, 2]
    assert isinstance(hits[0], VectorHits)


def test_empty_index() -> None:
    index = ExactIndex(8)
    assert len(index) == 0
    q = np.eye(8, dtype=np.float32)[:2]
    assert [h.ids.tolist() for h in index.search(q, 3)] == [[], []]
    assert [h.groups.tolist() for h in index.search_groups(q, 3)] == [[], []]
    assert index.remove([1, 2]) == 0 and index.remove_groups([1]) == 0


def test_bad_input_is_a_clear_error() -> None:
    index = ExactIndex(4)
    eye = np.eye(4, dtype=np.float32)
    index.add([1, 2], eye[:2], [1, 1])
    with pytest.raises(ConfigError, match="duplicate"):
        index.add([3, 3], eye[2:], [1, 1])
    with pytest.raises(ConfigError, match="already in the index"):
        index.add([2, 4], eye[2:], [1, 1])
    with pytest.raises(ConfigError, match="shape"):
        index.add([5], np.ones((1, 5), np.float32) / np.sqrt(5), [1])
    with pytest.raises(ConfigError, match="NaN"):
        index.add([5], np.full((1, 4), np.nan, np.float32), [1])
    with pytest.raises(ConfigError, match="L2-normalised"):
        index.add([5], np.ones((1, 4), np.float32), [1])
    with pytest.raises(ConfigError, match="groups"):
        index.add([5, 6], eye[2:], [1])
    with pytest.raises(ConfigError, match="integers"):
        index.add([5.5], eye[2:3], [1])
    with pytest.raises(ConfigError, match="not in the index"):
        index.groups_of([1, 99])
    with pytest.raises(ConfigError, match="not in the index"):
        index.set_groups([99], [1])
    with pytest.raises(ConfigError, match="k must be"):
        index.search(eye[:1], 0)
    with pytest.raises(ConfigError, match="queries"):
        index.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(ConfigError, match="NaN"):
        index.search_groups(np.full((1, 4), np.inf, np.float32), 1)
    with pytest.raises(ConfigError, match="precision"):
        ExactIndex(4, precision="fp8")
    with pytest.raises(ConfigError, match="dim"):
        ExactIndex(0)
    with pytest.raises(ConfigError, match="unknown search index kind"):
        make_index("nope", 4)
    with pytest.raises(ConfigError, match="bad options"):
        make_index("exact", 4, colour="red")
    assert len(index) == 2  # failed adds left nothing behind
    assert index.ids().tolist() == [1, 2]


def test_recall_at_k() -> None:
    def hits(ids: list[int]) -> VectorHits:
        return VectorHits(np.array(ids, np.int64), np.zeros(len(ids), np.float32))

    exact = [hits([1, 2, 3, 4]), hits([5, 6, 7, 8])]
    assert recall_at_k(exact, exact, 4) == 1.0
    assert recall_at_k([hits([1, 2, 9, 9]), hits([8, 7, 6, 5])], exact, 4) == pytest.approx(0.75)
    assert recall_at_k([hits([2, 1]), hits([0, 0])], exact, 2) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        recall_at_k(exact[:1], exact, 4)


def test_quantize_int8_rounds_half_away_from_zero_in_float32() -> None:
    # m/64 * 736 = 11.5 m exactly (736 = 23 * 32): half-integers, where numpy's round() goes to even.
    x = np.array([[1 / 64, 3 / 64, 5 / 64, -1 / 64, -3 / 64, 0.2, -0.2, 0.0, 1.0, -1.0]], np.float32)
    got = search.quantize_int8(x)
    assert got.dtype == np.int8
    assert got.tolist() == [[12, 35, 58, -12, -35, 127, -128, 0, 127, -128]]
    # Against an independent per-element reference on random unit vectors.
    rng = np.random.default_rng(5)
    v = unit_vectors(rng, 50, 512)
    ref = []
    for value in v.ravel().tolist():
        s = float(np.float32(value) * np.float32(736.0))
        r = int(np.floor(abs(s) + 0.5)) * (1 if s >= 0 else -1)
        ref.append(max(-128, min(127, r)))
    assert search.quantize_int8(v).ravel().tolist() == ref
    assert search.quantize_int8(v, scale=1000.0).max() > search.quantize_int8(v).max()
