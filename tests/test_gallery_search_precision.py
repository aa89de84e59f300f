"""FP16 and INT8 exact search: INT8 scores equal int32 dot / 736² exactly; FP16 matches its rounded vectors."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.gallery.search import ExactIndex, make_index, quantize_int8, recall_at_k
from test_gallery_search import _BIG, assert_same_as_reference, tie_vectors, unit_vectors

try:
    import numkong  # noqa: F401

    _BACKENDS = ["numkong", "numpy"]
except ImportError:  # the SIMD kernels are an extra; the NumPy fallback is always tested
    _BACKENDS = ["numpy"]

_S2 = np.float32(736.0 * 736.0)


def int8_reference(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact int64 dots of the quantised vectors, written out independently of the index."""
    scaled_v = np.asarray(vectors, np.float32) * np.float32(736.0)
    scaled_q = np.asarray(queries, np.float32) * np.float32(736.0)
    qv = np.clip(np.sign(scaled_v) * np.floor(np.abs(scaled_v) + np.float32(0.5)), -128, 127).astype(np.int64)
    qq = np.clip(np.sign(scaled_q) * np.floor(np.abs(scaled_q) + np.float32(0.5)), -128, 127).astype(np.int64)
    return qv @ qq.T


@pytest.mark.parametrize("backend", _BACKENDS)
@pytest.mark.parametrize(("n", "dim"), [(2000, 512), (_BIG, 96)])
def test_int8_is_exact(backend: str, n: int, dim: int) -> None:
    rng = np.random.default_rng(n)
    vectors = unit_vectors(rng, n, dim)
    ids = rng.permutation(n).astype(np.int64) * 7 + 3
    groups = rng.integers(0, n // 8, n)
    index = ExactIndex(dim, precision="int8", backend=backend)
    assert index.backend == backend
    index.add(ids, vectors, groups)
    queries = np.concatenate([vectors[:3] + 0.02 * unit_vectors(rng, 3, dim), unit_vectors(rng, 2, dim)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    dots = int8_reference(vectors, queries)
    k = 12
    for qset in (queries, queries[:1]):  # a batch and a single query take different kernels
        for j, (hits, ghits) in enumerate(zip(index.search(qset, k), index.search_groups(qset, k))):
            order = np.lexsort((ids, -dots[:, j]))[:k]
            assert hits.ids.tolist() == ids[order].tolist()
            want = np.clip(dots[order, j].astype(np.float32) / _S2, -1, 1)
            np.testing.assert_array_equal(hits.scores, want)
            # groups: best vector per group by (dot desc, id asc), groups by (dot desc, group asc)
            full = np.lexsort((ids, -dots[:, j]))
            uniq, first = np.unique(groups[full], return_index=True)
            best = full[first]
            top = np.lexsort((uniq, -dots[best, j]))[:k]
            assert ghits.groups.tolist() == uniq[top].tolist()
            assert ghits.vector_ids.tolist() == ids[best[top]].tolist()
            np.testing.assert_array_equal(ghits.scores, np.clip(dots[best[top], j].astype(np.float32) / _S2, -1, 1))


@pytest.mark.parametrize("backend", _BACKENDS)
def test_int8_orders_by_the_unclipped_score_and_clamps_the_public_one(backend: str) -> None:
    dim = 512
    flat = np.full((1, dim), 1 / np.sqrt(dim), np.float32)  # 0.0442 * 736 = 32.5 -> 33: 512 * 33^2 > 736^2
    assert int(int8_reference(flat, flat)[0, 0]) == 512 * 33 * 33
    other = flat.copy()
    other[0, :10] = 0.0
    other[0, 10:] = 1 / np.sqrt(dim - 10)  # 32.85 -> 33 on 502 entries
    assert int8_reference(other, flat)[0, 0] / 736**2 > 1.0  # also above 1 unclipped, but below `flat`
    assert int8_reference(other, flat)[0, 0] < int8_reference(flat, flat)[0, 0]
    extreme = np.zeros((1, dim), np.float32)
    extreme[0, 0] = 1.0  # clips to 127
    index = ExactIndex(dim, precision="int8", backend=backend)
    index.add([5, 9, 1], np.concatenate([other, flat, extreme]), [50, 90, 10])
    hits = index.search(flat, 3)[0]
    assert hits.ids.tolist() == [9, 5, 1]  # id 9 first although both clamp to 1.0 and 5 < 9
    assert hits.scores.tolist()[:2] == [1.0, 1.0]
    assert hits.scores[2] == np.float32(33 * 127) / _S2
    assert index.search_groups(flat, 2)[0].groups.tolist() == [90, 50]


@pytest.mark.parametrize("backend", _BACKENDS)
def test_int8_and_fp16_tie_rules_match_brute_force(backend: str) -> None:
    # Entries +-1/2 are exact in FP16; in INT8 they clamp to 127 / -128: integer dots with many ties.
    rng = np.random.default_rng(7)
    vectors = tie_vectors(rng, _BIG)
    ids = rng.permutation(_BIG).astype(np.int64)
    groups = rng.integers(0, 5000, _BIG)
    store = {int(i): (v, int(g)) for i, v, g in zip(ids, vectors, groups)}
    for precision in ("fp16", "int8"):
        index = make_index("exact", 16, precision=precision, backend=backend)
        index.add(ids, vectors, groups)
        if precision == "fp16":
            assert_same_as_reference(index, store, tie_vectors(rng, 3), 6)
        else:
            queries = np.concatenate([vectors[:2], tie_vectors(rng, 2)])
            dots = int8_reference(vectors, queries)
            for j, h in enumerate(index.search(queries, 6)):
                order = np.lexsort((ids, -dots[:, j]))[:6]
                assert h.ids.tolist() == ids[order].tolist()


@pytest.mark.parametrize("backend", _BACKENDS)
def test_fp16_scores_are_those_of_the_rounded_vectors(backend: str) -> None:
    rng = np.random.default_rng(8)
    n, dim = 3000, 128
    vectors = unit_vectors(rng, n, dim)
    index = ExactIndex(dim, precision="fp16", backend=backend)
    index.add(np.arange(n), vectors, np.arange(n) // 3)
    queries = unit_vectors(rng, 5, dim)
    reference = vectors.astype(np.float16).astype(np.float64) @ queries.astype(np.float16).astype(np.float64).T
    for qset in (queries, queries[:1]):
        for j, hits in enumerate(index.search(qset, 10)):
            want = np.sort(reference[:, j])[::-1][:10]
            np.testing.assert_allclose(hits.scores, want, atol=2e-6)
            np.testing.assert_allclose(reference[hits.ids, j], want, atol=2e-6)
    assert index.nbytes == n * (2 * dim + 16)


def test_backends_agree_and_mutations_keep_int8_exact() -> None:
    rng = np.random.default_rng(9)
    dim, n = 256, 6000
    vectors = unit_vectors(rng, n, dim)
    indexes = [ExactIndex(dim, precision="int8", backend=b, capacity=16) for b in _BACKENDS]
    for index in indexes:
        index.add(np.arange(n), vectors, np.arange(n) % 100)
        index.remove(np.arange(0, n, 3))
        index.remove_groups([1, 2, 3])
    alive = np.array([i for i in range(n) if i % 3 and i % 100 not in (1, 2, 3)])
    queries = vectors[alive[:4]]
    dots = int8_reference(vectors[alive], queries)
    results = [index.search(queries, 8) for index in indexes]
    for j in range(len(queries)):
        order = np.lexsort((alive, -dots[:, j]))[:8]
        for hits in results:
            assert hits[j].ids.tolist() == alive[order].tolist()


def test_recall_of_quantised_search_on_identity_data() -> None:
    # Faces of one person cluster (cosine ~0.7); a query is a new face of a known person.
    rng = np.random.default_rng(10)
    dim, persons, per = 512, 2000, 5
    centres = unit_vectors(rng, persons, dim)
    faces = centres.repeat(per, axis=0) + 0.03 * rng.standard_normal((persons * per, dim)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    queries = centres[:50] + 0.03 * rng.standard_normal((50, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = ExactIndex(dim)
    exact.add(np.arange(len(faces)), faces, np.arange(len(faces)) // per)
    truth = exact.search(queries, 5)
    assert all(set((h.ids // per).tolist()) == {j} for j, h in enumerate(truth))
    for precision in ("fp16", "int8"):
        index = ExactIndex(dim, precision=precision)
        index.add(np.arange(len(faces)), faces, np.arange(len(faces)) // per)
        assert recall_at_k(index.search(queries, 5), truth, 5) == 1.0
        assert [h.groups[0] for h in index.search_groups(queries, 3)] == list(range(50))


def test_bad_backend_and_too_many_dimensions() -> None:
    with pytest.raises(ConfigError, match="backend"):
        ExactIndex(8, precision="int8", backend="cuda")
    with pytest.raises(ConfigError, match="backend"):
        ExactIndex(8, backend="gpu")
    with pytest.raises(ConfigError, match="dimensions"):
        ExactIndex(200_000, precision="int8")
    assert quantize_int8(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_missing_extras_are_named(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from facelab.gallery import _search_kernels
    from facelab.gallery.search import AnnIndex

    monkeypatch.setitem(sys.modules, "numkong", None)  # as if the package were not installed
    monkeypatch.setattr(_search_kernels, "_warned", False)
    with pytest.raises(ConfigError, match=r"facelab\[search\]"):
        ExactIndex(8, precision="int8", backend="numkong")
    with caplog.at_level(logging.WARNING, logger="facelab.gallery._search_kernels"):
        index = ExactIndex(8, precision="fp16")
    assert index.backend == "numpy" and "facelab[search]" in caplog.text
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    with pytest.raises(ConfigError, match=r"facelab\[ann\]"):
        AnnIndex(8)
