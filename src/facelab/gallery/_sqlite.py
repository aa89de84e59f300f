"""The SQLite gallery backend: one file, no server (the default).

Settings on every connection: WAL journal (readers never block the writer), foreign keys on,
``secure_delete`` on (deleted rows are overwritten with zeros, so a deleted person's name and
embeddings do not linger in free pages), a busy timeout so two processes can write one gallery
(each write transaction takes the lock with ``BEGIN IMMEDIATE`` and waits for the other), and
``synchronous=NORMAL`` (a committed transaction survives a crash or ``kill -9`` of the process;
``synchronous=full`` also survives power loss).

Embeddings are stored as little-endian ``float32`` BLOBs (``4·D`` bytes); paths as the OS bytes.

URL: ``sqlite:///relative/gallery.db``, ``sqlite:////absolute/gallery.db`` (SQLAlchemy's convention)
or a plain path. Options (query parameters or keyword
arguments): ``timeout`` (seconds to wait for another writer, default 30), ``synchronous``
(``normal`` or ``full``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, GalleryError
from facelab.gallery import _index_snapshot as snapshots
from facelab.gallery._schema import APPLICATION
from facelab.gallery.store import GalleryStore, Transaction, register_backend

__all__ = ["SQLiteStore"]

_logger = logging.getLogger(__name__)

_HEADER = b"SQLite format 3\x00"

#: Page size of new gallery files (bytes).
PAGE_SIZE = 16384

_INSERT_FACE = (
    "INSERT INTO faces (collection_id, person_id, image_id, source, assigned_by, bbox, kps, det_score, quality, "
    "quality_detail, source_sha256, source_path, crop, created_at, embedding) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@register_backend("sqlite", "file")
class SQLiteStore(GalleryStore):
    """A gallery in one SQLite file (see the module docstring for its settings).

    Args:
        path: the database file; created (with its schema) when missing or empty.
        timeout: seconds to wait for another process's write transaction.
        synchronous: ``"normal"`` or ``"full"``.

    Raises:
        GalleryError: the file is not SQLite, is another application's database, is corrupt, or
            was written by a newer facelab; or its folder does not exist.
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike, *, timeout: float | str = 30.0, synchronous: str = "normal") -> None:
        super().__init__()
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.snapshot_dir = snapshots.snapshot_folder(self.path)
        if str(synchronous).lower() not in ("normal", "full"):
            raise ConfigError(f"sqlite gallery: synchronous must be 'normal' or 'full', got {synchronous!r}")
        try:
            self.timeout = float(timeout)
        except ValueError:
            raise ConfigError(f"sqlite gallery: timeout must be a number of seconds, got {timeout!r}") from None
        self._check_file()
        try:
            self._con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: cannot open the gallery: {exc}") from exc
        try:
            self._configure(str(synchronous).upper())
            self._migrate()
        except BaseException:
            self._con.close()
            raise

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise GalleryError(f"{self.path}: is a folder, not a gallery file")
        if not self.path.parent.is_dir():
            raise GalleryError(f"{self.path}: the folder {self.path.parent} does not exist")
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                head = fh.read(len(_HEADER))
            if head != _HEADER:
                raise GalleryError(f"{self.path}: not a facelab gallery (not an SQLite database file)")

    def _configure(self, synchronous: str) -> None:
        try:
            if self._con.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file: 16 KiB pages hold seven 512-d faces each (4 KiB pages hold one, half empty).
                self._con.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = self._con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _logger.warning("%s: journal mode is %s, not WAL", self.path, mode)
            for pragma in ("foreign_keys=ON", "secure_delete=ON", f"synchronous={synchronous}"):
                self._con.execute(f"PRAGMA {pragma}")
            self._con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        except sqlite3.DatabaseError as exc:
            raise self._wrap_error(exc) from exc  # type: ignore[misc]

    def _current_version(self) -> int:
        try:
            tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise self._wrap_error(exc) from exc  # type: ignore[misc]
        tables.discard("sqlite_sequence")
        if "gallery_meta" not in tables:
            if tables:
                listed = ", ".join(sorted(tables)[:8])
                raise GalleryError(f"{self.path}: not a facelab gallery (an SQLite database with tables {listed})")
            return 0
        meta = dict(self._con.execute("SELECT key, value FROM gallery_meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise GalleryError(
                f"{self.path}: not a facelab gallery (gallery_meta names application {meta.get('application')!r})"
            )
        try:
            return int(meta["schema_version"])
        except (KeyError, ValueError):
            raise GalleryError(f"{self.path}: damaged gallery (no schema version recorded)") from None

    # -- hooks ----------------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._con.execute(sql, tuple(params))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._con.executemany(sql, rows)

    def _begin(self, write: bool) -> None:
        self._con.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")

    def _commit(self) -> None:
        self._con.execute("COMMIT")

    def _rollback(self) -> None:
        if self._con.in_transaction:
            self._con.execute("ROLLBACK")

    def _encode_vector(self, vector: np.ndarray) -> Any:
        return np.ascontiguousarray(vector, dtype="<f4").tobytes()

    def _decode_vectors(self, values: list[Any], dim: int) -> np.ndarray:
        if not values:
            return np.zeros((0, dim), np.float32)
        data = b"".join(values)
        if len(data) != 4 * dim * len(values):
            raise GalleryError(f"{self.path}: stored embeddings do not have {dim} dimensions (damaged gallery?)")
        return np.frombuffer(data, dtype="<f4").reshape(len(values), dim).astype(np.float32, copy=False)

    def _sequence(self) -> int:
        row = self._con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").fetchone()
        return 0 if row is None else int(row[0])

    def _insert_faces(self, rows: list[tuple[Any, ...]]) -> list[int]:
        # Inside BEGIN IMMEDIATE nobody else inserts, and AUTOINCREMENT hands out consecutive ids.
        before = self._sequence()
        self._executemany(_INSERT_FACE, rows)
        after = self._sequence()
        if after - before != len(rows):  # pragma: no cover - would mean another writer inside our lock
            raise GalleryError(f"{self.path}: face ids are not consecutive ({before}..{after} for {len(rows)} rows)")
        return list(range(before + 1, after + 1))

    def _wrap_error(self, exc: Exception) -> Exception | None:
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return GalleryError(
                f"{self.path}: the gallery is locked by another process (waited {self.timeout:g} s; raise ?timeout=)"
            )
        if isinstance(exc, sqlite3.IntegrityError):
            return GalleryError(f"{self.path}: refused by the gallery's constraints: {text}")
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return GalleryError(f"{self.path}: not a facelab gallery, or a corrupt one ({text})")
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
            return GalleryError(f"{self.path}: cannot write the gallery ({text})")
        return None

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when no one else has the file open)."""
        with self._lock:
            try:
                self._con.close()
            except sqlite3.Error:  # pragma: no cover
                pass

    def erase_deleted(self) -> None:
        """Checkpoint and truncate the WAL, so deleted rows survive neither in it nor in the file.

        With ``secure_delete`` on, SQLite overwrites deleted content in the database pages; the
        WAL still holds older page images until a checkpoint copies them back and truncates it.
        A reader in another process can delay the checkpoint; that is logged. Index snapshots
        that no longer match their collection's revision (or whose collection is gone) are deleted.
        """
        with self._lock:
            busy, _, _ = self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            current = {int(c): int(r) for c, r in self._con.execute("SELECT id, revision FROM collections")}
        snapshots.remove_snapshots(self.snapshot_dir, lambda f: current.get(f.collection_id) != f.revision)
        if busy:
            _logger.warning(
                "%s: WAL checkpoint incomplete (another connection is reading); run it again later", self.path
            )

    # -- index snapshots (facelab.gallery._index_snapshot) ----------------------------------------
    def _after_commit(self, tx: Transaction) -> None:
        """Delete the snapshots of every collection the transaction changed (they show an older revision)."""
        if not tx.touched or not self.snapshot_dir.exists():
            return
        snapshots.remove_snapshots(
            self.snapshot_dir,
            lambda f: f.collection_id in tx.touched and tx.revisions.get(f.collection_id) != f.revision,
        )

    def remove_stale_snapshots(self, collection_id: int, revision: int) -> int:
        """Delete the collection's snapshot files of any other revision than ``revision``; returns how many."""
        cid = int(collection_id)
        return snapshots.remove_snapshots(
            self.snapshot_dir, lambda f: f.collection_id == cid and f.revision != revision
        )

    def snapshot_record(self, collection_id: int, precision: str) -> tuple[int, dict[str, Any] | None]:
        """``(the collection's revision, its published snapshot's record or None)``, read together."""
        with self.snapshot():
            revision = self.revision(collection_id)
            row = self._one(
                "SELECT value FROM gallery_meta WHERE key = ?", (snapshots.meta_key(collection_id, precision),)
            )
        try:
            record = None if row is None else json.loads(row[0])
        except ValueError:
            record = None
        return revision, record if isinstance(record, dict) else None

    def publish_snapshot(self, collection_id: int, revision: int, precision: str, tmp: Path, token: str) -> bool:
        """Rename a written snapshot into place and record it, if the collection is still at ``revision``.

        Both happen inside one write transaction, so no write to the collection can commit in
        between (a later one deletes the file after its commit). Older revisions' files go.

        Returns:
            Whether it was published (``False``: the collection changed meanwhile; ``tmp`` is left to the caller).
        """
        cid = int(collection_id)
        with self.transaction():
            if self.revision(cid) != revision:
                return False
            os.replace(tmp, self.snapshot_dir / snapshots.snapshot_name(cid, revision, precision))
            self._x(
                "INSERT OR REPLACE INTO gallery_meta (key, value) VALUES (?, ?)",
                (snapshots.meta_key(cid, precision), json.dumps({"revision": int(revision), "token": token})),
            )
        self.remove_stale_snapshots(cid, revision)
        return True

    def delete_collection(self, collection_id: int) -> None:
        """Delete a collection with all its persons, images and faces (and its snapshot records)."""
        with self.transaction():
            super().delete_collection(collection_id)
            self._x("DELETE FROM gallery_meta WHERE key LIKE ?", (f"index_snapshot:{int(collection_id)}:%",))

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` messages (``["ok"]`` when sound)."""
        return [r[0] for r in self._all("PRAGMA integrity_check")]

    def describe(self) -> dict[str, Any]:
        """File and SQLite facts."""
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "backend": "sqlite",
            "url": self.url,
            "path": str(self.path),
            "file_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "sqlite_version": sqlite3.sqlite_version,
            "schema_version": self.schema_version(),
            "page_size": int(self._one("PRAGMA page_size")[0]),
            "snapshot_bytes": snapshots.snapshot_bytes(self.snapshot_dir),
        }
