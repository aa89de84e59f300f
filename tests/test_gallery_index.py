"""Photo-library indexing: resumable by content hash, errors recorded, whole batches or nothing.

Real photos, the default (open) pack; SQLite and PostgreSQL for the library path, SQLite for the
process-level tests (``kill -9`` in the middle of ``facelab index``, then resume).
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import script_command
from facelab.gallery import Gallery
from gallery_fixtures import BACKENDS, analyzer, copy_photos, gallery_home, gallery_url, small_photos  # noqa: F401


def _library(photos, root: Path) -> Path:
    copy_photos(photos, ["A1", "B13", "couple", "noface"], root)
    copy_photos(photos, ["D3"], root / "sub")
    (root / "sub" / "junk.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    (root / "notes.txt").write_text("not an image: ignored when scanning folders")
    return root


def _state(g: Gallery) -> dict[str, tuple[str, int]]:
    return {i.path.name: (i.status, i.face_count) for i in g.store.images(g.collection().id)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_is_resumable_by_content_hash(backend, tmp_path, small_photos, analyzer):
    root = _library(small_photos, tmp_path / "lib")
    seen = []
    with Gallery.open(gallery_url(backend, tmp_path)) as g:
        first = g.index_photos([root], analyzer, batch_images=2, progress=lambda s: seen.append((s.done, s.faces)))
        assert (first.scanned, first.indexed, first.errors, first.unchanged) == (6, 5, 1, 0)
        assert first.faces_added == 5 and first.failures[0][0].endswith("junk.jpg")
        assert _state(g) == {"A1.jpg": ("done", 1), "B13.jpg": ("done", 1), "couple.jpg": ("done", 2),
                             "noface.jpg": ("done", 0), "D3.jpg": ("done", 1), "junk.jpg": ("error", 0)}  # fmt: skip
        assert seen[-1] == (6, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        arrays = g.face_arrays()
        assert len(arrays) == 5 and (arrays.person_ids == -1).all() and (arrays.image_ids > 0).all()
        # Nothing changed: nothing is read or analysed.
        second = g.index_photos([root], analyzer)
        assert (second.indexed, second.unchanged, second.faces_added) == (0, 6, 0)
        # Touched but same bytes: re-hashed, not re-analysed.
        os.utime(root / "A1.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
        third = g.index_photos([root], analyzer)
        assert (third.indexed, third.unchanged) == (0, 6)
        assert g.index_photos([root], analyzer).unchanged == 6  # the new stat was recorded
        # Changed content: its faces are replaced.
        old_ids = set(g.face_arrays().ids.tolist())
        shutil.copy(small_photos["C20"], root / "B13.jpg")
        fourth = g.index_photos([root], analyzer)
        assert (fourth.indexed, fourth.faces_added, fourth.faces_removed) == (1, 1, 1)
        (c21,) = analyzer.analyze(small_photos["C21"])
        best = g.search_faces(c21.embedding, k=1)[0][0]
        assert best.face_id not in old_ids and g.store.faces(face_ids=[best.face_id])[0].source_path.name == "B13.jpg"
        # Deleted file: forgotten with --prune only.
        (root / "sub" / "D3.jpg").unlink()
        assert g.index_photos([root], analyzer).pruned == 0 and "D3.jpg" in _state(g)
        fifth = g.index_photos([root], analyzer, prune=True)
        assert fifth.pruned == 1 and "D3.jpg" not in _state(g) and len(g.face_arrays()) == 4
        # Failed files are retried only when asked.
        assert g.index_photos([root], analyzer).errors == 0
        assert g.index_photos([root], analyzer, retry_errors=True).errors == 1


def test_a_batch_is_written_whole_or_not_at_all(tmp_path, small_photos, analyzer, monkeypatch):
    root = _library(small_photos, tmp_path / "lib")
    with Gallery.open(tmp_path / "g.db") as g:
        calls = {"n": 0}
        real = g.store._insert_faces

        def interrupted(rows):
            calls["n"] += 1
            ids = real(rows)  # the rows are inserted inside the transaction...
            if calls["n"] == 2:
                raise KeyboardInterrupt  # ... and Ctrl-C arrives before the commit
            return ids

        monkeypatch.setattr(g.store, "_insert_faces", interrupted)
        with pytest.raises(KeyboardInterrupt):
            g.index_photos([root], analyzer, batch_images=2)
        state = _state(g)
        faces = g.face_arrays()
        assert len(state) == 2 and sum(c for _, c in state.values()) == len(faces)  # only the first batch
        monkeypatch.setattr(g.store, "_insert_faces", real)
        report = g.index_photos([root], analyzer, batch_images=2)
        assert report.unchanged == 2 and report.indexed + report.errors == 4
        assert len(g.face_arrays()) == 5 and len(_state(g)) == 6


def test_non_utf8_file_names(tmp_path, small_photos, analyzer):
    folder = tmp_path / "lib"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9 \xff.jpg")  # Latin-1 bytes, not valid UTF-8
    try:
        shutil.copy(small_photos["A1"], folder / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    with Gallery.open(tmp_path / "g.db") as g:
        report = g.index_photos([folder], analyzer)
        assert report.indexed == 1 and report.faces_added == 1
        (image,) = g.store.images(g.collection().id)
        assert os.fsencode(image.path) == os.fsencode(folder) + b"/caf\xe9 \xff.jpg"
        assert g.index_photos([folder], analyzer).unchanged == 1


def _committed(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_during_index_then_resume(tmp_path, small_photos, gallery_home):
    keys = ["A1", "A2", "A4", "A5", "B13", "B14", "B15", "C20", "C21", "D3", "D12", "couple"]
    root = tmp_path / "lib"
    copy_photos(small_photos, keys, root)
    db = tmp_path / "g.db"
    env = {**os.environ, "FACELAB_HOME": str(gallery_home)}
    cmd = [*script_command(), "index", str(root), "--gallery", str(db), "--batch-images", "1", "--offline"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while _committed(db) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with Gallery.open(db) as g:
        assert g.store.integrity_check() == ["ok"]
        state = _state(g)
        assert 3 <= len(state) < len(keys)
        arrays = g.face_arrays()
        per_image = {iid: int((arrays.image_ids == iid).sum()) for iid in set(arrays.image_ids.tolist())}
        for image in g.store.images(g.collection().id):  # every committed image has exactly its faces
            assert per_image.get(image.id, 0) == image.face_count
    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Gallery.open(db) as g:
        resumed = _state(g)
        arrays = g.face_arrays()
    assert set(resumed) == {f"{k}.jpg" for k in keys}
    assert {k: v for k, v in resumed.items() if k in state} == state  # committed rows untouched
    assert resumed["couple.jpg"] == ("done", 2) and all(
        v == ("done", 1) for k, v in resumed.items() if k != "couple.jpg"
    )
    assert len(arrays) == 13 and len(np.unique(arrays.ids)) == 13
