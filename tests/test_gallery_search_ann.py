"""Approximate (HNSW, usearch) search: same API as the exact index, recall measured against exact FP32."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.gallery.search import AnnIndex, ExactIndex, make_index, recall_at_k
from shared_data import missing_dependency
from test_gallery_search import unit_vectors

try:
    import usearch  # noqa: F401
except ImportError:
    missing_dependency("AnnIndex needs usearch (pip install 'facelab[ann]')")


def identity_data(rng: np.random.Generator, persons: int, per: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    centres = unit_vectors(rng, persons, dim)
    faces = centres.repeat(per, axis=0) + 0.03 * rng.standard_normal((persons * per, dim)).astype(np.float32)
    return faces / np.linalg.norm(faces, axis=1, keepdims=True), centres


def test_ann_finds_what_exact_finds_and_reports_recall() -> None:
    rng = np.random.default_rng(0)
    dim, persons, per = 64, 1500, 4
    faces, centres = identity_data(rng, persons, per, dim)
    ids = np.arange(len(faces), dtype=np.int64) * 10 - 5000  # negative ids survive the uint64 keys
    groups = np.arange(len(faces)) // per
    index = make_index("ann", dim, expansion_search=64)
    assert isinstance(index, AnnIndex)
    index.add(ids, faces, groups)
    exact = ExactIndex(dim)
    exact.add(ids, faces, groups)
    queries = centres[:40]
    recall = index.recall_report(queries, 10)
    assert recall == recall_at_k(index.search(queries, 10), exact.search(queries, 10), 10)
    assert recall >= 0.95
    hits = index.search(queries[:3], 4)
    for j, h in enumerate(hits):
        assert set(h.ids.tolist()) == set(ids[groups == j].tolist())
        np.testing.assert_allclose(h.scores, faces[(h.ids + 5000) // 10] @ queries[j], atol=1e-5)
        assert np.all(np.diff(h.scores) <= 0)
    ghits = index.search_groups(queries[:5], 3)
    assert [int(g.groups[0]) for g in ghits] == [0, 1, 2, 3, 4]
    want = exact.search_groups(queries[:5], 1)
    assert [int(g.vector_ids[0]) for g in ghits] == [int(w.vector_ids[0]) for w in want]


def test_ann_mutations() -> None:
    rng = np.random.default_rng(1)
    dim = 32
    faces, centres = identity_data(rng, 200, 3, dim)
    index = AnnIndex(dim, precision="fp16", connectivity=8)
    index.add(np.arange(600), faces, np.arange(600) // 3)
    assert index.remove([0, 1, 999_999]) == 2  # unknown ids ignored
    assert index.remove_groups([5, 6]) == 6
    assert len(index) == 592 and index.ids().tolist() == [i for i in range(2, 600) if i // 3 not in (5, 6)]
    hits = index.search(centres[0], 3)[0]
    assert 2 in hits.ids.tolist()
    assert 0 not in hits.ids.tolist() and 1 not in hits.ids.tolist()
    assert all(int(i) // 3 not in (5, 6) for h in index.search(centres[5:7], 5) for i in h.ids)
    index.set_groups([2], [77])
    assert index.groups_of([2]).tolist() == [77]
    assert int(index.search_groups(centres[0], 1)[0].groups[0]) == 77
    with pytest.raises(ConfigError, match="already in the index"):
        index.add([3], faces[3:4], [1])
    assert len(index) == 592  # the failed add touched neither structure
    index.clear()
    assert len(index) == 0 and index.search(centres[:2], 3)[0].ids.tolist() == []
    index.add([1], faces[:1], [1])
    assert index.search(faces[0], 3)[0].ids.tolist() == [1]
    assert index.nbytes > 0


def test_ann_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="precision"):
        AnnIndex(8, precision="bf16")
    with pytest.raises(ConfigError, match="connectivity"):
        AnnIndex(8, connectivity=0)
    index = AnnIndex(8)
    index.expansion_search = 200
    assert index.expansion_search == 200
    with pytest.raises(ConfigError, match="expansion_search"):
        index.expansion_search = 0
