"""Enrolment under the quality policy and 1:N search by photo, with the default (open) pack on real photos.

Identities come from deepface's ``master.csv`` (see ``gallery_fixtures``). Nothing here depends
on exact detector boxes.
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.attributes.quality import QualityPolicy
from facelab.errors import ConfigError, ContractMismatchError
from facelab.gallery import Gallery, contract_of
from facelab.gallery.enroll import REJECTION_REASONS, enroll_folders
from gallery_fixtures import BACKENDS, analyzer, copy_photos, gallery_home, gallery_url, small_photos  # noqa: F401


@pytest.fixture
def sqlite_gallery(tmp_path):
    g = Gallery.open(tmp_path / "g.db")
    yield g
    g.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_enrol_then_name_the_people_in_photos(backend, tmp_path, small_photos, analyzer):
    p = small_photos
    with Gallery.open(gallery_url(backend, tmp_path)) as g:
        a = g.enroll([p["A1"], p["A2"]], analyzer, name="Angelina")
        b = g.enroll([p["B13"], p["B14"]], analyzer, name="B person", external_id="b-13")
        d = g.enroll([p["D3"]], analyzer, name="D person")
        assert [len(r.face_ids) for r in (a, b, d)] == [2, 2, 1] and not (a.rejected or b.rejected or d.rejected)
        coll = g.collection()
        assert coll.contract == contract_of(analyzer) and coll.contract.dim == 128
        assert "dlib" in coll.contract.model
        faces = g.faces(a.person.id, with_embeddings=True)
        assert [f.source_path for f in faces] == [p["A1"], p["A2"]]
        assert all(f.quality is not None and f.quality > 0.35 and f.det_score is not None for f in faces)
        assert all(abs(np.linalg.norm(f.embedding) - 1) < 1e-5 for f in faces)
        results = g.search_images([p["A4"], p["B15"], p["D12"], p["C20"]], analyzer)
        names = [[r.best.name if r.best else None for r in per_image] for per_image in results]
        assert names == [["Angelina"], ["B person"], ["D person"], [None]]
        assert results[0][0].threshold == analyzer.threshold
        assert results[0][0].matches[0].score >= analyzer.threshold > results[3][0].matches[0].score
        couple = g.search_image(p["couple"], analyzer)
        assert len(couple) == 2 and all(r.face is not None and r.face.bbox.shape == (4,) for r in couple)
        record = couple[0].to_dict()
        assert "embedding" not in record["face"] and set(record) == {"face", "threshold", "identity", "matches"}


def test_rejection_reasons(sqlite_gallery, small_photos, analyzer, tmp_path):
    p, g = small_photos, sqlite_gallery
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    res = g.enroll([p["couple"], p["noface"], junk, tmp_path / "missing.jpg", p["A1"]], analyzer, name="A")
    assert [r.reasons for r in res.rejected] == [("multiple_faces",), ("face_not_found",), ("invalid_image",),
                                                   ("invalid_image",)]  # fmt: skip
    assert res.rejected[2].source == str(junk) and "not an image" in res.rejected[2].detail
    assert res.accepted == [str(p["A1"])] and res.person.face_count == 1
    assert set(r for rej in res.rejected for r in rej.reasons) <= set(REJECTION_REASONS)
    # The policy's reasons, with strict limits; nothing accepted -> no person created.
    strict = QualityPolicy(min_face=10_000, min_det_score=5.0, max_angle=45.0, min_quality=0.999)
    res = g.enroll([p["B13"]], analyzer, name="B", policy=strict)
    assert res.person is None and res.face_ids == []
    assert {"face_too_small", "low_detection_score", "low_quality"} <= set(res.rejected[0].reasons)
    assert [x.name for x in g.persons()] == ["A"]
    # review="off" accepts what the policy refused.
    assert g.enroll([p["B13"]], analyzer, name="B", policy=strict, review="off").face_ids
    # The liveness hook: a predicate that calls every face a spoof.
    calls = []

    def is_live(image, face):
        calls.append((image.shape, face.bbox.shape))
        return False

    res = g.enroll([p["B14"]], analyzer, person=g.find_person("B"), is_live=is_live)
    assert [r.reasons for r in res.rejected] == [("spoof_detected",)] and calls and calls[0][0][2] == 3
    # select="largest" enrols one face of a group photo.
    res = g.enroll([p["couple"]], analyzer, name="from couple", select="largest")
    assert len(res.face_ids) == 1
    with pytest.raises(ConfigError, match="either name"):
        g.enroll([p["A1"]], analyzer)
    with pytest.raises(ConfigError, match="review"):
        g.enroll([p["A1"]], analyzer, name="x", review="lenient")


def test_strict_review_rejects_a_face_closer_to_someone_else(sqlite_gallery, small_photos, analyzer):
    p, g = small_photos, sqlite_gallery
    a = g.enroll([p["A1"]], analyzer, name="A", review="strict")
    b = g.enroll([p["B13"]], analyzer, name="B", review="strict")
    assert a.face_ids and b.face_ids
    # A new "person" from a photo of A: A scores above the threshold.
    res = g.enroll([p["A2"]], analyzer, name="impostor", review="strict")
    assert res.person is None and res.rejected[0].reasons == ("identity_similarity_conflict",)
    assert "A" in res.rejected[0].detail
    # Adding B's photo to A: closer to B than to A.
    res = g.enroll([p["B14"]], analyzer, person=a.person, review="strict")
    assert res.rejected[0].reasons == ("identity_similarity_conflict",) and "B" in res.rejected[0].detail
    # Adding A's own photo to A passes; standard review would have accepted the impostor.
    assert g.enroll([p["A4"]], analyzer, person=a.person, review="strict").face_ids
    assert g.enroll([p["A2"]], analyzer, name="impostor", review="standard").face_ids


def test_threshold_from_float_calibration_file_and_collection(sqlite_gallery, small_photos, analyzer, tmp_path):
    p, g = small_photos, sqlite_gallery
    g.enroll([p["A1"]], analyzer, name="A")
    (res,) = g.search_image(p["A4"], analyzer)
    score = res.matches[0].score
    assert res.best is not None
    assert g.search_image(p["A4"], analyzer, threshold=score + 1e-4)[0].best is None
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"metric": "cosine", "threshold": score - 1e-4, "far": 1e-3}))
    assert g.search_image(p["A4"], analyzer, threshold=cal)[0].threshold == pytest.approx(score - 1e-4)
    g.store.update_collection(g.collection().id, threshold=0.9999)
    assert g.search_image(p["A4"], analyzer)[0].threshold == 0.9999
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metric": "euclidean", "threshold": 0.6}))
    with pytest.raises(ConfigError, match="euclidean"):
        g.search_image(p["A4"], analyzer, threshold=bad)


def test_another_recogniser_is_refused_naming_both(sqlite_gallery, small_photos, analyzer, tmp_path):
    from cli_helpers import build_pack
    from facelab import FaceAnalyzer

    g = sqlite_gallery
    g.enroll([small_photos["A1"]], analyzer, name="A")
    other = FaceAnalyzer(str(build_pack(tmp_path / "pack")), download=False)
    with pytest.raises(ContractMismatchError) as err:
        g.enroll([small_photos["A2"]], other, name="A2")
    message = str(err.value)
    assert analyzer.cards["recognition"].name in message and other.cards["recognition"].name in message
    with pytest.raises(ContractMismatchError):
        g.search_image(small_photos["A2"], other)
    with pytest.raises(ContractMismatchError):
        g.index_photos([small_photos["A2"]], other)


def test_people_from_folders_is_resumable(sqlite_gallery, small_photos, analyzer, tmp_path):
    g, root = sqlite_gallery, tmp_path / "people"
    copy_photos(small_photos, ["A1", "A2"], root / "Angelina")
    copy_photos(small_photos, ["B13"], root / "Bee" / "nested")
    (root / ".hidden").mkdir()
    first = enroll_folders(g, root, analyzer)
    assert [(r.person.name, len(r.face_ids)) for r in first] == [("Angelina", 2), ("Bee", 1)]
    again = enroll_folders(g, root, analyzer)
    assert [(len(r.face_ids), len(r.skipped)) for r in again] == [(0, 2), (0, 1)]
    copy_photos(small_photos, ["A4"], root / "Angelina")
    third = enroll_folders(g, root, analyzer)
    assert [len(r.face_ids) for r in third] == [1, 0] and third[0].person.id == first[0].person.id
    assert [p.face_count for p in g.persons()] == [3, 1]


def test_face_crops_are_kept_only_when_asked(sqlite_gallery, small_photos, analyzer, tmp_path):
    import cv2

    g = sqlite_gallery
    plain = g.enroll([small_photos["A1"]], analyzer, name="no crops")
    assert g.face_crop(plain.face_ids[0]) is None
    coll = g.create_collection("with crops", save_crops=True)
    kept = g.enroll([small_photos["B13"]], analyzer, name="B", collection=coll.name)
    crop = g.face_crop(kept.face_ids[0])
    image = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
    assert crop[:2] == b"\xff\xd8" and image.shape == (112, 112, 3)
    (face,) = g.faces(kept.person.id)
    assert face.has_crop
    report = g.index_photos([small_photos["couple"]], analyzer, collection=coll.name)
    assert report.faces_added == 2
    assert all(g.face_crop(f) is not None for f in g.face_arrays(coll.name).ids.tolist())


def test_liveness_hook_needs_a_liveness_result(sqlite_gallery, small_photos, analyzer):
    from types import SimpleNamespace

    from facelab.gallery.enroll import analyzer_liveness

    (face,) = analyzer.analyze(small_photos["A1"])
    if getattr(face, "liveness", None) is None:  # the open pack alone computes no liveness
        with pytest.raises(ConfigError, match="liveness"):
            sqlite_gallery.enroll([small_photos["A1"]], analyzer, name="A", is_live=analyzer_liveness)
        assert sqlite_gallery.collections() == [] or sqlite_gallery.persons() == []
    face.liveness = SimpleNamespace(is_live=False)
    assert analyzer_liveness(None, face) is False
    face.liveness = SimpleNamespace(is_live=True)
    assert analyzer_liveness(None, face) is True
