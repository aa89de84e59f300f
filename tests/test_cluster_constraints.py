"""The engine: same-photo cannot-links, corrections that survive re-runs and additions, stable keys."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.cluster import same_image_violations
from facelab.gallery.cluster import (
    CLUSTERERS,
    Constraint,
    ConstraintSet,
    Correction,
    FaceSet,
    add_faces,
    apply_corrections,
    recluster,
)
from facelab.gallery.cluster.engine import same_image_pairs
from facelab.gallery.cluster.synthetic import MixtureModel, sample_library

TAU = 0.923  # the open pack's threshold; the synthetic model has its statistics
MODEL = MixtureModel(dim=128, common=0.835, identity=0.14, noise=0.025, identity_spread=0.35, image_spread=0.56)
ALGORITHMS = [*CLUSTERERS.names(), "immich_defaults", "photoprism_defaults"]


def people(faces: FaceSet) -> dict[int, set[int]]:
    """person key -> face ids."""
    out: dict[int, set[int]] = {}
    for f, p in zip(faces.face_ids.tolist(), faces.persons.tolist()):
        if p >= 0:
            out.setdefault(p, set()).add(f)
    return out


def identity_faces(n_ids: int, per_id: int, seed: int = 0) -> tuple[FaceSet, np.ndarray]:
    """``n_ids`` identities with ``per_id`` faces each, one photo per face; face id = 1000 + row."""
    rng = np.random.default_rng(seed)
    lib = sample_library(MODEL, 40 * n_ids * per_id, mean_size=3 * per_id, group_fraction=0.0, seed=seed)
    sizes = np.bincount(lib.labels)
    chosen = rng.choice(np.flatnonzero(sizes >= per_id), n_ids, replace=False)
    rows = np.concatenate([np.flatnonzero(lib.labels == c)[:per_id] for c in chosen])
    labels = np.repeat(np.arange(n_ids), per_id)
    faces = FaceSet(1000 + np.arange(len(rows)), lib.embeddings[rows], np.arange(len(rows)) + 50_000)
    return faces, labels


@pytest.fixture(scope="module")
def group_library():
    lib = sample_library(MODEL, 1500, group_fraction=0.6, max_group=5, seed=21)
    return lib, FaceSet(np.arange(len(lib)), lib.embeddings, lib.image_ids)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_two_faces_of_one_photo_in_one_person(group_library, algorithm: str) -> None:
    lib, faces = group_library
    result = recluster(faces, algorithm=algorithm, threshold=TAU)
    assert same_image_violations(result.labels(), lib.image_ids) == (0, 0)


def test_the_photo_rule_splits_a_look_alike() -> None:
    # one tight identity; faces 0 and 1 share a photo (a reflection, a twin): never one person
    faces, _ = identity_faces(1, 8, seed=3)
    image = faces.image_ids.copy()
    image[1] = image[0]
    faces = FaceSet(faces.face_ids, faces.embeddings, image)
    for algorithm in ALGORITHMS:
        labels = recluster(faces, algorithm=algorithm, threshold=TAU).labels()
        assert labels[0] < 0 or labels[0] != labels[1], algorithm
        unconstrained = recluster(faces, algorithm=algorithm, threshold=TAU, same_image=False).labels()
        if algorithm == "agglomerative":
            assert unconstrained[0] == unconstrained[1] >= 0  # without the rule they would merge


def test_same_image_pairs() -> None:
    assert same_image_pairs(np.array([7, 3, 7, 3, 9])).tolist() == [[0, 2], [1, 3]]
    assert same_image_pairs(np.array([1])).shape == (0, 2)


def test_corrections_survive_reruns_and_additions() -> None:
    every, every_labels = identity_faces(4, 14, seed=5)
    first10 = np.arange(len(every)) % 14 < 10
    faces, labels = every.subset(np.flatnonzero(first10)), every_labels[first10]
    key = {i: 10 * (i + 1) for i in range(4)}  # the library as it stands: one person per identity
    base = faces.with_persons(np.array([key[i] for i in labels]))
    ids = {i: faces.face_ids[labels == i] for i in range(4)}
    moved = int(ids[2][0])
    rejected = int(ids[3][0])
    corrections = [
        Correction("merge", key[0], other=key[1]),  # identities 0 and 1 are one person (the user says)
        Correction("split", key[2], faces=tuple(int(f) for f in ids[2][1:4]), other=77),  # 3 faces apart
        Correction("move", key[3], faces=(moved,)),  # a face of identity 2 is identity 3's
        Correction("reject", key[3], faces=(rejected,)),  # not this person
    ]
    fixed, cons = apply_corrections(base, None, corrections)
    after = people(fixed)
    assert after[key[0]] == set(ids[0]) | set(ids[1]) and key[1] not in after
    assert after[77] == set(ids[2][1:4].tolist())
    assert moved in after[key[3]] and rejected not in after[key[3]]

    def check(state: FaceSet) -> None:
        got = people(state)
        assert set(ids[0]) | set(ids[1]) <= got[key[0]]
        assert got[77] >= set(ids[2][1:4].tolist()) and not (got[77] & got[key[2]])
        assert moved in got[key[3]]
        assert rejected not in got.get(key[3], set())

    # a full re-run (another algorithm too) keeps every correction
    for algorithm in ("agglomerative", "dbscan", "chinese_whispers"):
        check(recluster(fixed, cons, algorithm=algorithm, threshold=TAU).apply(fixed))
    # new photos of identities 0 and 2 join incrementally; the corrections stay
    new_rows = np.flatnonzero(np.isin(every_labels, [0, 2]) & ~first10)  # faces 10..13 of identities 0, 2
    new = FaceSet(9000 + np.arange(len(new_rows)), every.embeddings[new_rows], 90_000 + np.arange(len(new_rows)))
    library = fixed.concat(new)
    is_new = np.r_[np.zeros(len(fixed), bool), np.ones(len(new), bool)]
    added = add_faces(library, is_new, cons, threshold=TAU).apply(library)
    check(added)
    got = people(added)
    new_of_0 = set((9000 + np.flatnonzero(every_labels[new_rows] == 0)).tolist())
    assert len(new_of_0 & got[key[0]]) >= 3  # new photos of a merged person join it
    # and one more full run after the addition
    check(recluster(added, cons, threshold=TAU).apply(added))


def test_named_people_are_never_dissolved() -> None:
    faces, labels = identity_faces(3, 6, seed=7)
    base = recluster(faces, threshold=TAU).apply(faces)
    named_key = int(base.persons[0])
    named = base.with_persons(base.persons, named={named_key})
    # an absurdly strict re-run breaks every unnamed person apart, not the named one
    strict = recluster(named, threshold=TAU, params={"min_sim": 0.9999})
    assert set(strict.face_ids[strict.persons == named_key]) == set(base.person_faces(named_key))
    assert strict.dissolved and named_key not in strict.dissolved
    # without keep_named the name still follows most of its faces when they stay together
    loose = recluster(named, threshold=TAU, keep_named=False)
    assert set(loose.face_ids[loose.persons == named_key]) == set(base.person_faces(named_key))


def test_stable_keys_rule() -> None:
    faces, labels = identity_faces(3, 8, seed=9)
    first = recluster(faces, threshold=TAU)
    state = first.apply(faces, new_keys=[40, 41, 42])
    again = recluster(state, threshold=TAU)
    assert again.n_new == 0 and np.array_equal(again.persons, state.persons)
    assert again.changes(state) == []
    # person 90 holds 5 of identity 0's faces, person 91 its other 3 (a previous over-split):
    # the re-run merges them; 90 keeps the key (more faces), 91 is reported merged into it
    persons = state.persons.copy()
    rows0 = np.flatnonzero(labels == 0)
    persons[rows0[:5]] = 90
    persons[rows0[5:]] = 91
    merged = recluster(state.with_persons(persons), threshold=TAU)
    assert set(merged.persons[rows0].tolist()) == {90} and merged.merged == {91: 90}
    # a person whose faces are spread without a majority anywhere is dissolved
    persons = state.persons.copy()
    persons[rows0[0]], persons[np.flatnonzero(labels == 1)[0]], persons[np.flatnonzero(labels == 2)[0]] = 95, 95, 95
    spread = recluster(state.with_persons(persons), threshold=TAU)
    assert 95 not in spread.persons.tolist()
    assert 95 in spread.merged or 95 in spread.dissolved


def test_incremental_respects_the_photo_rule() -> None:
    every, every_labels = identity_faces(2, 10, seed=13)
    first8 = np.arange(len(every)) % 10 < 8
    faces, labels = every.subset(np.flatnonzero(first8)), every_labels[first8]
    library = recluster(faces, threshold=TAU).apply(faces)
    key0 = int(library.persons[labels == 0][0])
    rows = np.flatnonzero((every_labels == 0) & ~first8)  # two more faces of identity 0 ...
    new = FaceSet([5001, 5002], every.embeddings[rows], [777, 777])  # ... in one photo
    lib = library.concat(new)
    result = add_faces(lib, np.array([5001, 5002]), threshold=TAU)
    joined = result.persons[-2:]
    assert (joined == key0).sum() == 1  # one of them joins, the other may not
    assert result.info["new_faces"] == 2


def test_join_links_keep_faces_together() -> None:
    faces, labels = identity_faces(3, 6, seed=17)
    a = int(faces.face_ids[labels == 0][0])
    b = int(faces.face_ids[labels == 1][0])
    cons = ConstraintSet()
    cons.join(a, b)  # the user says these two are one person, without naming it
    labels_out = recluster(faces, cons, threshold=TAU).labels()
    rows = faces.rows_of([a, b])
    assert labels_out[rows[0]] >= 0 and labels_out[rows[0]] == labels_out[rows[1]]
    # joined to a pinned face: the pin's person
    cons.pin(a, 70)
    state = recluster(faces, cons, threshold=TAU).apply(faces)
    assert state.persons[rows].tolist() == [70, 70]
    # a later apart wins over the join
    cons.separate(a, b)
    assert not cons.together
    out = recluster(faces, cons, threshold=TAU).labels()
    assert out[rows[0]] != out[rows[1]]


def test_constraint_rows_round_trip() -> None:
    cons = ConstraintSet()
    cons.pin(1, 10)
    cons.reject(2, 10)
    cons.separate(4, 3)
    cons.join(6, 5)
    rows = cons.rows()
    assert rows == sorted(
        [Constraint("pin", 1, 10), Constraint("reject", 2, 10), Constraint("apart", 3, 4), Constraint("join", 5, 6)]
    )
    again = ConstraintSet.from_rows([r.to_dict() for r in rows])
    assert again.rows() == rows
    assert ConstraintSet.from_rows([("pin", 1, 10)]).pins == {1: 10}
    # a later decision wins: pinning removes the reject, rejecting removes the pin
    cons.pin(2, 10)
    assert 2 not in cons.rejects and cons.pins[2] == 10
    cons.reject(1, 10)
    assert 1 not in cons.pins
    cons.rename_person(10, 11)
    assert cons.pins == {2: 11} and cons.rejects == {1: {11}}
    assert cons.drop_faces([2, 3, 6]) == 3 and cons.rows() == [Constraint("reject", 1, 11)]
    with pytest.raises(ConfigError, match="unknown constraint kind"):
        Constraint("must", 1, 2)


def test_bad_corrections_are_clear_errors() -> None:
    faces, _ = identity_faces(2, 4, seed=1)
    state = faces.with_persons(np.array([5, 5, 5, 5, 6, 6, 6, 6]))
    with pytest.raises(ConfigError, match="unknown face id 42"):
        apply_corrections(state, None, [Correction("move", 5, faces=(42,))])
    with pytest.raises(ConfigError, match="not a face of person 6"):
        apply_corrections(state, None, [Correction("split", 6, faces=(1000,), other=9)])
    with pytest.raises(ConfigError, match="needs 'other'"):
        Correction("merge", 5)
    with pytest.raises(ConfigError, match="same person"):
        Correction("merge", 5, other=5)
    with pytest.raises(ConfigError, match="unknown correction"):
        Correction("rename", 5)
    with pytest.raises(ConfigError, match="same-person cosine threshold"):
        recluster(state)
    with pytest.raises(ConfigError, match="unique"):
        FaceSet([1, 1], np.eye(2), [0, 1])
    with pytest.raises(ConfigError, match="image_ids"):
        FaceSet([1, 2], np.eye(2), [0])
