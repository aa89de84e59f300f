"""``facelab gallery reembed``: a collection moves to another model pack, people and assignments kept.

The second pack is the test pack folder of ``cli_helpers.build_pack`` (InsightFace's real
SCRFD-500M detector with a small seeded 512-d recogniser): a different detector and embedding
contract than the open pack, on the same real photos.
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import json

import pytest

from cli_helpers import build_pack, run_main
from facelab.errors import GalleryError
from facelab.gallery import Gallery, contract_of
from facelab.gallery._index_snapshot import snapshot_files, snapshot_folder
from gallery_fixtures import analyzer, copy_photos, gallery_home, small_photos  # noqa: F401


@pytest.fixture(scope="module")
def other_pack(tmp_path_factory):
    return build_pack(tmp_path_factory.mktemp("pack"))


def test_reembed_keeps_people_and_moves_the_contract(
    tmp_path, small_photos, analyzer, other_pack, gallery_home, capsys, monkeypatch
):
    from facelab import FaceAnalyzer

    p = small_photos
    db = tmp_path / "g.db"
    library = tmp_path / "photos"
    copy_photos(p, ["A4", "couple", "noface"], library)
    with Gallery.open(db) as g:
        a = g.enroll([p["A1"], p["A2"]], analyzer, name="Angelina", external_id="aj")
        g.index_photos([library], analyzer)
        faces_before = g.face_arrays()
        ids = faces_before.ids[faces_before.image_ids > 0]
        g.apply_clusters(ids[:1], [0])
        old_contract = g.collection().contract
    with Gallery.open(db, snapshot=True) as g:  # an index snapshot of the old embeddings
        g.search_faces(faces_before.embeddings[:1])
        old_id = g.collection().id
    assert [f.collection_id for f in snapshot_files(snapshot_folder(db))] == [old_id]
    monkeypatch.setenv("FACELAB_HOME", str(gallery_home))
    code, out, err = run_main(
        ["gallery", "reembed", "--gallery", db, "--pack", other_pack, "--offline", "--json"], capsys
    )
    assert code in (0, 3), err
    report = json.loads(out)
    new = FaceAnalyzer(str(other_pack), download=False)
    assert snapshot_files(snapshot_folder(db)) == []  # the old embeddings' snapshot went with them
    with Gallery.open(db) as g:
        assert [c.name for c in g.collections()] == ["default"]
        coll = g.collection()
        assert coll.contract == contract_of(new) != old_contract and coll.contract.dim == 512
        people = g.persons()
        assert [(x.name, x.external_id, x.kind) for x in people] == [
            ("Angelina", "aj", "named"),
            (None, None, "cluster"),
        ]
        arrays = g.face_arrays()
        assert arrays.embeddings.shape[1] == 512 and len(arrays) == report["faces"] + report["new_faces"]
        assert report["faces"] + len(report["lost"]) == len(faces_before)
        assert report["faces"] >= 4  # SCRFD finds (nearly) every face dlib found
        angelina = g.find_person("aj")
        assert angelina.face_count >= 1
        # The new model recognises the enrolled face from its own photo.
        (hit,) = g.search_image(p["A1"], new, threshold=0.99)
        assert hit.best is not None and hit.best.person_id == angelina.id and hit.best.score > 0.999
        assert {i.path.name for i in g.store.images(coll.id)} == {"A4.jpg", "couple.jpg", "noface.jpg"}
        with pytest.raises(GalleryError, match="already holds"):
            from facelab.gallery.transfer import reembed_collection

            reembed_collection(g, "default", new)
    assert a.face_ids


def test_reembed_loses_exactly_the_faces_of_missing_and_changed_photos(tmp_path, small_photos, analyzer, other_pack):
    """A deleted source photo and one whose bytes changed since indexing lose their faces, each with its reason."""
    from facelab import FaceAnalyzer
    from facelab.gallery.transfer import reembed_collection

    p = small_photos
    library = tmp_path / "photos"
    gone, changed, kept = copy_photos(p, ["A4", "couple", "B13"], library)
    with Gallery.open(tmp_path / "g.db") as g:
        g.index_photos([library], analyzer)
        by_image = {i.path.name: i.id for i in g.store.images(g.collection().id)}
        faces = g.face_arrays()
        expect = {
            "source photo missing": set(faces.ids[faces.image_ids == by_image[gone.name]].tolist()),
            "changed": set(faces.ids[faces.image_ids == by_image[changed.name]].tolist()),
        }
        assert expect["source photo missing"] and expect["changed"]
        gone.unlink()
        changed.write_bytes(p["A1"].read_bytes())  # another real photo under the indexed name
        report = reembed_collection(g, "default", FaceAnalyzer(str(other_pack), download=False))
    lost = {}
    for item in report["lost"]:
        lost.setdefault("changed" if "changed since it was stored" in item["reason"] else item["reason"], set()).add(
            item["face_id"]
        )
    assert lost == expect
    assert all(item["path"] in (str(gone), str(changed)) for item in report["lost"])
