"""Gallery files that are not what they should be, schema migrations, and concurrent writers.

A corrupt or foreign database gives a clear error naming the file; an older schema is migrated in
place with its data; two processes writing one SQLite gallery at the same time both succeed and
every row lands once.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from facelab.errors import GalleryError
from facelab.gallery import EmbeddingContract, Gallery
from facelab.gallery._schema import MIGRATIONS, SCHEMA_VERSION, TYPE_NAMES
from gallery_fixtures import pg_base_url

CONTRACT = EmbeddingContract("m.test", "ab" * 32, "pre", 8)


def _error(path: Path) -> str:
    with pytest.raises(GalleryError) as err:
        Gallery.open(str(path))
    assert str(path) in str(err.value)
    return str(err.value)


def test_foreign_and_corrupt_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello, I am a text file\n" * 100)
    assert "not an SQLite database" in _error(text)

    other = tmp_path / "other_app.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    assert "not a facelab gallery" in _error(other) and "customers" in _error(other)

    meta = tmp_path / "other_meta.db"
    con = sqlite3.connect(meta)
    con.execute("CREATE TABLE gallery_meta (key TEXT, value TEXT)")
    con.execute("INSERT INTO gallery_meta VALUES ('application', 'somebody-else')")
    con.commit()
    con.close()
    assert "somebody-else" in _error(meta)

    # A real gallery whose pages are overwritten with garbage after the header.
    good = tmp_path / "good.db"
    with Gallery.open(str(good)) as g:
        g.add_person("someone")
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    data[100:] = rng.integers(0, 256, len(data) - 100, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(bytes(data))
    assert "corrupt" in _error(bad) or "not a facelab gallery" in _error(bad)

    assert "does not exist" in _error(tmp_path / "no_such_folder" / "g.db")
    assert "is a folder" in _error(tmp_path)


def test_newer_schema_is_refused_and_old_schema_is_migrated(tmp_path):
    newer = tmp_path / "newer.db"
    with Gallery.open(str(newer)) as g:
        assert g.store.describe()["page_size"] == 16384  # a new file gets 16 KiB pages
    con = sqlite3.connect(newer)
    con.execute("UPDATE gallery_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    assert "newer facelab" in _error(newer)

    # A version-1 gallery, written with the version-1 statements, holding one person.
    old = tmp_path / "v1.db"
    con = sqlite3.connect(old)
    types = {**TYPE_NAMES["sqlite"], "vec": "BLOB"}
    con.execute("CREATE TABLE gallery_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.executemany(
        "INSERT INTO gallery_meta VALUES (?, ?)", [("application", "facelab-gallery"), ("schema_version", "1")]
    )
    for statement in MIGRATIONS[1]:
        if isinstance(statement, str):
            con.execute(statement.format(**types))
    con.execute("INSERT INTO collections (name, metadata, created_at, updated_at) VALUES ('default', '{}', 0, 0)")
    con.execute(
        "INSERT INTO persons (collection_id, name, metadata, created_at, updated_at) "
        "VALUES (1, 'Old Timer', '{}', 0, 0)"
    )
    con.commit()
    con.close()
    with Gallery.open(str(old)) as g:
        assert g.store.schema_version() == SCHEMA_VERSION
        assert [p.name for p in g.persons()] == ["Old Timer"]
        tables = {r[0] for r in g.store._all("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "face_links" in tables


def test_postgres_schema_of_another_application_is_refused():
    import psycopg

    base = pg_base_url()
    with psycopg.connect(base, autocommit=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS someone_else")
        con.execute("CREATE TABLE IF NOT EXISTS someone_else.orders (id int)")
    sep = "&" if "?" in base else "?"
    with pytest.raises(GalleryError, match="not a facelab gallery.*orders"):
        Gallery.open(f"{base}{sep}schema=someone_else")


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from facelab.gallery import EmbeddingContract, Gallery
    from facelab.gallery.records import NewFace

    url, tag = sys.argv[1], sys.argv[2]
    contract = EmbeddingContract("m.test", "ab" * 32, "pre", 8)
    rng = np.random.default_rng(int(tag == "b"))
    with Gallery.open(url, timeout=60) as g:
        coll = g.ensure_contract(g.collection(create=True), contract)
        for i in range(60):
            with g.store.transaction():
                p = g.store.add_person(coll.id, f"{tag}-{i}")
                g.store.add_faces(coll.id, [NewFace(rng.standard_normal(8), person_id=p.id) for _ in range(3)])
    print("done", tag)
    """
)


def test_two_processes_write_one_sqlite_gallery(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with Gallery.open(url) as g:  # created up front, so both writers find the schema
        g.ensure_contract(g.collection(create=True), CONTRACT)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), url, tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]  # fmt: skip
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with Gallery.open(url) as g:
        people = g.persons()
        assert sorted(p.name for p in people) == sorted([f"a-{i}" for i in range(60)] + [f"b-{i}" for i in range(60)])
        assert all(p.face_count == 3 for p in people)
        arrays = g.face_arrays()
        assert len(arrays) == 360 and len(set(arrays.ids.tolist())) == 360
        assert g.store.integrity_check() == ["ok"]
