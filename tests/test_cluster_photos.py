"""Clustering real photos with the open pack: deepface's identities, RD (one person), group photos."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import open_pack_or_skip
from facelab.eval.cluster import embed_photos, load_labels, photo_cluster_metrics, same_image_violations
from facelab.gallery.cluster import CLUSTERERS, Correction, FaceSet, add_faces, apply_corrections, recluster
from shared_data import shared_file

pytestmark = pytest.mark.slow

GROUPS = ["data/images/t1.jpg", "data/verification/deepface/couple.jpg"]
GROUPS += ["data/verification/deepface/selfie-many-people.jpg", "data/verification/deepface/img59.jpg"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from facelab.pipeline import FaceAnalyzer

    home = tmp_path_factory.mktemp("facelab_home")
    open_pack_or_skip(home)
    analyzer = FaceAnalyzer("open", home=home, download=False, modules=["detection", "recognition"])
    labelled = load_labels(shared_file("data/verification/deepface/master.csv"))
    rd = sorted(str(p) for p in shared_file("data/images/inspireface/RD").iterdir())
    paths = list(labelled.items) + [str(shared_file(p)) for p in GROUPS] + rd
    faces = embed_photos(analyzer, paths)
    return analyzer, labelled, faces, rd


def test_deepface_identities_and_group_photos(photos) -> None:
    analyzer, labelled, faces, rd = photos
    assert analyzer.threshold == pytest.approx(0.923)
    counts = np.bincount(faces.image, minlength=len(faces.paths))
    assert counts[faces.paths.index(str(shared_file(GROUPS[0])))] == 6  # t1.jpg: 6 faces
    assert sum(counts[faces.paths.index(str(shared_file(p)))] for p in GROUPS) >= 12
    result = recluster(faces.face_set(), threshold=analyzer.threshold)
    metrics, missing = photo_cluster_metrics(labelled, faces, result.labels())
    assert missing == []
    assert metrics.faces == 25 and metrics.identities == 9
    assert metrics.bcubed_f >= 0.95
    assert metrics.same_image_pairs == 0
    # RD: one person in 5 photos (their main faces; the detector may add a false positive elsewhere)
    rd_rows = np.flatnonzero(np.isin(faces.image, [faces.paths.index(p) for p in rd]) & faces.main)
    labels = result.labels()[rd_rows]
    assert len(rd_rows) == 5 and labels[0] >= 0 and (labels == labels[0]).all()


@pytest.mark.parametrize("algorithm", [*CLUSTERERS.names(), "immich_defaults"])
def test_no_two_faces_of_one_photo_in_one_person(photos, algorithm: str) -> None:
    analyzer, _, faces, _ = photos
    result = recluster(faces.face_set(), algorithm=algorithm, threshold=analyzer.threshold)
    assert same_image_violations(result.labels(), faces.image) == (0, 0)


def test_corrections_survive_reruns_and_incremental_additions(photos) -> None:
    analyzer, _, faces, rd = photos
    tau = analyzer.threshold
    everything = faces.face_set()
    in_rd = np.isin(faces.image, [faces.paths.index(p) for p in rd])
    is_rd = in_rd & faces.main  # RD's five faces; any other box in those photos is left out
    library = everything.subset(np.flatnonzero(~in_rd))
    library = recluster(library, threshold=tau).apply(library, new_keys=None)
    # RD's five photos arrive later: they found one new person of their own
    full = library.concat(everything.subset(np.flatnonzero(is_rd)))
    is_new = np.r_[np.zeros(len(library), bool), np.ones(int(is_rd.sum()), bool)]
    added = add_faces(full, is_new, threshold=tau)
    assert added.n_new == 1 and (added.new_clusters[is_new] == 0).all()
    assert (added.persons[~is_new] == library.persons).all()  # nothing else moved
    state = added.apply(full, new_keys=[500])
    rd_ids = state.face_ids[is_new]
    # the user: one RD photo is not this person; a face of t1.jpg is (a look-alike)
    t1 = faces.paths.index(str(shared_file(GROUPS[0])))
    t1_face = int(everything.face_ids[np.flatnonzero(faces.image == t1)[0]])
    state, cons = apply_corrections(
        state,
        None,
        [Correction("reject", 500, faces=(int(rd_ids[0]),)), Correction("move", 500, faces=(t1_face,))],
    )

    def check(s: FaceSet) -> None:
        members = set(s.person_faces(500).tolist())
        assert int(rd_ids[0]) not in members
        assert set(int(f) for f in rd_ids[1:]) <= members
        assert t1_face in members
        assert same_image_violations(s.persons, s.image_ids) == (0, 0)

    check(state)
    rerun = recluster(state, cons, threshold=tau).apply(state)
    check(rerun)
    check(recluster(state, cons, algorithm="chinese_whispers", threshold=tau).apply(state))
    # a copy of the rejected photo arriving later is a new face: a reject names a face, not an
    # embedding, so the copy joins person 500 incrementally while the rejected face stays out
    again = FaceSet([99_001], everything.embeddings[np.flatnonzero(is_rd)[0]][None], ["rd-copy"])
    grown = rerun.concat(again)
    incremental = add_faces(grown, np.array([99_001]), cons, threshold=tau).apply(grown)
    check(incremental)
    assert int(incremental.persons[-1]) == 500
