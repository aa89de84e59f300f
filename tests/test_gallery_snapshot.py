"""Index snapshots of SQLite galleries: same answers as the store, never stale, never left behind.

A snapshot is a copy of biometric data written next to the gallery file (``<db>.index/``). These
tests check, on real SQLite files and real processes: that a gallery opened from a snapshot
answers exactly like one rebuilt from the store (without reading the store's embeddings); that a
change made by another connection or process is seen by the next search; that a snapshot is
never taken for another database's; and that every write which removes or changes faces leaves
no snapshot file, and no byte of a deleted person's embedding, under the gallery's folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.gallery import EmbeddingContract, Gallery
from facelab.gallery import _index_snapshot as snapshots
from facelab.gallery.records import NewFace
from facelab.gallery.search import ExactIndex, quantize_int8

DIM = 64
CONTRACT = EmbeddingContract("snap_rec.synthetic", "5a" * 32, "facelab-pre-1/test", DIM)
SRC = Path(__file__).resolve().parents[1] / "src"


def _unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _fill(db: Path, seed: int = 0, persons: int = 20, faces: int = 400) -> tuple[list[int], np.ndarray]:
    """A gallery with ``persons`` people and ``faces`` faces (plus 10 unassigned); returns person ids and vectors."""
    rng = np.random.default_rng(seed)
    with Gallery.open(db, snapshot=False) as g:
        coll = g.ensure_contract(g.collection(create=True), CONTRACT)
        ids = g.store.add_persons(coll.id, [(f"p{i}", None, None) for i in range(persons)])
        vecs = _unit(rng, faces + 10)
        owners = [ids[i % persons] for i in range(faces)] + [None] * 10
        with g.store.transaction():
            g.store.add_faces(coll.id, [NewFace(v, person_id=o) for v, o in zip(vecs, owners)])
    return ids, vecs


def _answers(g: Gallery, queries: np.ndarray) -> tuple[list, list]:
    persons = [[(m.person_id, m.face_id, m.score) for m in r.matches] for r in g.search_embeddings(queries, k=7)]
    faces = [[(m.face_id, m.person_id, m.score) for m in hits] for hits in g.search_faces(queries, k=9)]
    return persons, faces


def _files(db: Path) -> list[snapshots.SnapshotFile]:
    return snapshots.snapshot_files(snapshots.snapshot_folder(db))


def _no_store_reads(monkeypatch) -> None:
    """Make any read of every embedding from the store fail: an index must come from its snapshot."""

    def refuse(*args, **kwargs):
        raise AssertionError("the index was rebuilt from the store")

    monkeypatch.setattr("facelab.gallery._sqlite.SQLiteStore.vector_chunks", refuse)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_snapshot_answers_exactly_like_the_store(tmp_path, monkeypatch, precision):
    db = tmp_path / "g.db"
    _fill(db)
    queries = _unit(np.random.default_rng(9), 6)
    with Gallery.open(db, precision=precision, snapshot=False) as g:
        want = _answers(g, queries)
    assert _files(db) == []  # snapshot=False writes none
    with Gallery.open(db, precision=precision, snapshot=True) as g:
        assert _answers(g, queries) == want
        g.wait_snapshots()
        (snap,) = _files(db)
        assert snap.path.name == f"c1-r{g.collection().revision}-{precision}.snap"
        assert g.info()["snapshot_bytes"] == snap.path.stat().st_size
    digest = hashlib.sha256(snap.path.read_bytes()).hexdigest()
    with monkeypatch.context() as m:
        _no_store_reads(m)
        with Gallery.open(db, precision=precision) as g:
            assert _answers(g, queries) == want
            # the index maps the file copy-on-write: changing it in memory leaves the file alone
            index = g.index_for(g.collection())
            index.remove(index.ids()[:50])
            index.set_groups(index.ids()[:5], np.full(5, -1))
            assert len(index) == 360
    assert hashlib.sha256(snap.path.read_bytes()).hexdigest() == digest
    # snapshot=False ignores it (and a bad value is refused)
    with Gallery.open(f"sqlite:///{db}?snapshot=false", precision=precision) as g:
        assert g.snapshot is False and _answers(g, queries) == want
    with pytest.raises(ConfigError, match="snapshot"):
        Gallery.open(db, snapshot="sometimes")


def test_small_collections_get_no_snapshot_by_default_and_options_are_checked(tmp_path):
    db = tmp_path / "g.db"
    _fill(db)
    with Gallery.open(db) as g:
        assert g.snapshot is None
        g.search_embeddings(_unit(np.random.default_rng(1), 1))
    assert _files(db) == [] and not snapshots.snapshot_folder(db).exists()
    with pytest.raises(ConfigError, match="exact index"):
        Gallery.open(db, index="ann", snapshot=True)


def test_another_process_changing_the_store_is_seen_by_the_next_search(tmp_path, monkeypatch):
    db = tmp_path / "g.db"
    persons, vecs = _fill(db)
    with Gallery.open(db, snapshot=True) as g:
        g.search_embeddings(vecs[0])
    (old,) = _files(db)
    with monkeypatch.context() as m:
        _no_store_reads(m)
        g = Gallery.open(db, snapshot=True)
        assert g.search_embeddings(vecs[0])[0].matches[0].person_id == persons[0]  # from the snapshot
    try:
        # Another process: a new person whose face is the query, and person 1 deleted.
        code = textwrap.dedent(f"""
            import numpy as np
            from facelab.gallery import Gallery
            from facelab.gallery.records import NewFace
            q = np.frombuffer(bytes.fromhex("{vecs[0].tobytes().hex()}"), np.float32)
            with Gallery.open({str(db)!r}) as g:
                coll = g.collection()
                newcomer = g.add_person("newcomer")
                with g.store.transaction():
                    g.store.add_faces(coll.id, [NewFace(q, person_id=newcomer.id)])
                g.delete_person({persons[1]})
                print(newcomer.id)
        """)
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)}
        )
        assert run.returncode == 0, run.stderr
        newcomer = int(run.stdout.split()[-1])
        assert not old.path.exists()  # the other process deleted the stale snapshot
        hits = g.search_embeddings(vecs[1:2], k=20)[0].matches
        assert persons[1] not in [h.person_id for h in hits]
        top = g.search_embeddings(vecs[0], k=2)[0].matches
        assert {h.person_id for h in top} == {persons[0], newcomer} and top[0].score == pytest.approx(1.0, abs=1e-6)
        g.wait_snapshots()  # the rebuilt index got a snapshot of the new revision
        assert [f.revision for f in _files(db)] == [g.collection().revision]

        # A raw connection (e.g. an older facelab) moves a face to another person and bumps the revision,
        # without knowing about snapshots: the snapshot no longer matches, is deleted, and not used.
        face = g.search_faces(vecs[2], k=1)[0][0].face_id
        with sqlite3.connect(db) as con:
            con.execute("UPDATE faces SET person_id = ? WHERE id = ?", (persons[5], face))
            con.execute("UPDATE collections SET revision = revision + 1")
        con.close()
        assert g.search_faces(vecs[2], k=1)[0][0].person_id == persons[5]
    finally:
        g.close()
    with Gallery.open(db, snapshot=False) as fresh:
        assert fresh.search_faces(vecs[2], k=1)[0][0].person_id == persons[5]


def test_a_replaced_database_never_reads_the_old_snapshot(tmp_path, monkeypatch):
    db = tmp_path / "g.db"
    _fill(db, seed=0)
    with Gallery.open(db, snapshot=True) as g:
        g.search_embeddings(_unit(np.random.default_rng(1), 1))
    kept = tmp_path / "kept.index"
    shutil.copytree(snapshots.snapshot_folder(db), kept)
    # A new gallery at the same path, built the same way (same collection id and revision), other vectors.
    for p in tmp_path.glob("g.db*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    _, vecs = _fill(db, seed=1)
    shutil.copytree(kept, snapshots.snapshot_folder(db))
    (snap,) = _files(db)
    with Gallery.open(db, snapshot=False) as g:
        assert g.collection().revision == snap.revision  # the file name alone would match
        want = _answers(g, vecs[:3])
    with Gallery.open(db) as g:
        assert _answers(g, vecs[:3]) == want
        assert _files(db) == []  # it was not this database's: deleted


def _victim_gallery(db: Path, precision: str):
    """A gallery with a snapshot in which a victim (3 faces) is searchable; returns (gallery, victim, vectors)."""
    persons, _ = _fill(db)
    g = Gallery.open(db, snapshot=True, precision=precision)
    coll = g.collection()
    victim = g.add_person("victim")
    vecs = _unit(np.random.default_rng(77), 3)
    with g.store.transaction():
        g.store.add_faces(coll.id, [NewFace(v, person_id=victim.id) for v in vecs])
    assert g.search_embeddings(vecs[0])[0].matches[0].person_id == victim.id
    g.wait_snapshots()
    return g, victim, vecs, persons


def _stored_bytes(vecs: np.ndarray, precision: str) -> list[bytes]:
    if precision == "int8":
        return [quantize_int8(v).tobytes()[:24] for v in vecs]
    return [v.astype("<f4").tobytes()[:32] for v in vecs]


def _everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_deleting_a_person_leaves_no_snapshot_and_no_embedding_bytes(tmp_path, precision):
    db = tmp_path / "g.db"
    g, victim, vecs, _ = _victim_gallery(db, precision)
    try:
        (snap,) = _files(db)
        raw = snap.path.read_bytes()
        assert all(b in raw for b in _stored_bytes(vecs, precision))  # the snapshot did hold them
        g.delete_person(victim.id)
        assert _files(db) == [] and not snapshots.snapshot_folder(db).exists()
        everything = _everything_under(tmp_path)  # database, WAL and any snapshot, while still open
        for b in _stored_bytes(vecs, "fp32") + _stored_bytes(vecs, precision):
            assert b not in everything
        assert victim.id not in [m.person_id for m in g.search_embeddings(vecs[0], k=30)[0].matches]
    finally:
        g.close()
    # the next process's index gets a new snapshot, without the victim
    with Gallery.open(db, snapshot=True, precision=precision) as g:
        assert victim.id not in [m.person_id for m in g.search_embeddings(vecs[0], k=30)[0].matches]
        g.wait_snapshots()
        (new,) = _files(db)
        assert new.revision == g.collection().revision
    assert not any(b in new.path.read_bytes() for b in _stored_bytes(vecs, precision))


@pytest.mark.parametrize(
    "change",
    ["delete_faces", "merge", "unassign", "assign", "delete_collection", "rename_in_store", "erase_deleted"],
)
def test_every_write_deletes_the_collections_snapshot(tmp_path, change):
    db = tmp_path / "g.db"
    g, victim, vecs, persons = _victim_gallery(db, "fp32")
    try:
        assert len(_files(db)) == 1
        faces = [f.id for f in g.faces(victim.id)]
        if change == "delete_faces":
            g.delete_faces(faces[:1])
        elif change == "merge":
            g.merge_persons(persons[0], [victim.id])
        elif change == "unassign":
            g.delete_person(victim.id, keep_faces=True)
        elif change == "assign":
            g.assign_faces(faces[:1], [persons[3]])
        elif change == "delete_collection":
            g.delete_collection("default")
        elif change == "rename_in_store":  # straight through the store, as reembed does
            g.store.update_collection(g.collection().id, name="renamed")
        else:  # a raw write that bumps the revision: erase_deleted finds the snapshot stale
            with sqlite3.connect(db) as con:
                con.execute("UPDATE collections SET revision = revision + 1")
            con.close()
            assert len(_files(db)) == 1
            g.store.erase_deleted()
        assert _files(db) == []
    finally:
        g.close()


def test_a_snapshot_of_a_changed_collection_is_never_published(tmp_path):
    db = tmp_path / "g.db"
    _fill(db)
    with Gallery.open(db, snapshot=False) as g:
        coll = g.collection()
        index = g.index_for(coll)
        writer = snapshots.SnapshotWriter(g.store, coll, index, g.store.revision(coll.id))
        g.add_person("meanwhile")  # a write commits after the arrays were taken
        writer.run()  # synchronously: written, then refused at publication
        assert writer.published is False
        assert _files(db) == []
        writer = snapshots.SnapshotWriter(g.store, coll, g.index_for(coll), g.store.revision(coll.id))
        writer.run()
        assert writer.published and [f.revision for f in _files(db)] == [g.store.revision(coll.id)]
    # a damaged snapshot is ignored (and the answers come from the store)
    (snap,) = _files(db)
    data = bytearray(snap.path.read_bytes())
    snap.path.write_bytes(bytes(data[: len(data) // 2]))
    queries = _unit(np.random.default_rng(3), 2)
    with Gallery.open(db) as g:
        got = _answers(g, queries)
    with Gallery.open(db, snapshot=False) as g:
        assert got == _answers(g, queries)


def test_exact_index_id_map_modes_agree_with_a_reference():
    """Sorted (binary search) and dict modes of the id map, through adds, removals and regrouping."""
    rng = np.random.default_rng(5)
    index = ExactIndex(8, capacity=4)
    ref: dict[int, int] = {}  # id -> group
    next_id = 1
    for step in range(60):
        op = rng.integers(0, 4) if step > 3 else 0
        if op == 0 or not ref:  # ascending ids keep sorted mode; sometimes add lower (unused) ids
            n = int(rng.integers(1, 20))
            ids = np.arange(next_id, next_id + n) if rng.random() < 0.8 else -np.arange(next_id, next_id + n)
            next_id += n
            index.add(ids, _unit(rng, n, 8), ids % 7)
            ref.update(zip(ids.tolist(), (ids % 7).tolist()))
        elif op == 1:
            gone = rng.choice(list(ref), size=min(len(ref), int(rng.integers(1, 5))), replace=False)
            assert index.remove(np.append(gone, 10**9)) == len(gone)
            for i in gone.tolist():
                del ref[i]
        elif op == 2:
            some = rng.choice(list(ref), size=min(len(ref), 3), replace=False)
            index.set_groups(some, np.full(len(some), 99))
            ref.update(dict.fromkeys(some.tolist(), 99))
        else:
            probe = np.array(list(ref)[:5] + [10**9 + 1])
            assert index.contains(probe).tolist() == [True] * (len(probe) - 1) + [False]
        assert index.ids().tolist() == sorted(ref)
        if ref:
            keys = np.array(sorted(ref))
            assert index.groups_of(keys).tolist() == [ref[k] for k in keys.tolist()]
    with pytest.raises(ConfigError, match="already in the index"):
        index.add([next(iter(ref))], _unit(rng, 1, 8), [0])
    with pytest.raises(ConfigError, match="duplicate"):
        index.add([10**6, 10**6], _unit(rng, 2, 8), [0, 0])
    ids, groups, rows = index.arrays()
    again = ExactIndex.restore(ids.copy(), groups.copy(), rows.copy())
    q = _unit(rng, 3, 8)
    assert [h.ids.tolist() for h in again.search(q, 5)] == [h.ids.tolist() for h in index.search(q, 5)]
    with pytest.raises(ConfigError, match="rows"):
        ExactIndex.restore(ids, groups, rows.astype(np.float16))


def test_quantize_int8_blocks_match_the_formula():
    rng = np.random.default_rng(6)
    x = _unit(rng, 3000, 512)  # over one block of 2**21 values
    x[0, :6] = [0.5 / 736, -0.5 / 736, 1.5 / 736, -2.5 / 736, 0.9, -0.9]  # ties round away from zero; clipping
    scaled = x * np.float32(736)  # the formula is defined in float32
    want = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5)), -128, 127).astype(np.int8)
    out = np.empty_like(want)
    assert quantize_int8(x, out=out) is out
    assert np.array_equal(out, want) and np.array_equal(quantize_int8(x), want)
    assert out[0, :6].tolist() == [1, -1, 2, -3, 127, -128]
    with pytest.raises(ConfigError, match="out"):
        quantize_int8(x, out=np.empty((3000, 512), np.int16))
