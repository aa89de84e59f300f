"""Gallery storage behind one interface: the backend registry, URLs, and the SQL both backends share.

A store is opened from a URL (:func:`open_store`): ``sqlite:///path/to/gallery.db`` (the
default backend: one file, no server) or ``postgresql://user@host/db`` (PostgreSQL with
pgvector). Every backend subclasses :class:`GalleryStore` and registers itself for its URL
schemes in :data:`STORE_BACKENDS`; the SQL that reads and writes collections, persons, images
and faces lives here once, written with ``?`` placeholders and the schema of
:mod:`facelab.gallery._schema`.

Transactions: every write runs inside :meth:`GalleryStore.transaction`; calls nest (the outer
one commits). A transaction that changed a collection bumps its ``revision`` once, just before
it commits, and reports the new value in :attr:`Transaction.revisions`, which is how an
in-memory search index knows whether it saw every change (see :class:`facelab.gallery.Gallery`).
A failure rolls everything back: no half-written rows survive an error, Ctrl-C or ``kill -9``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from facelab.errors import ConfigError, GalleryError, GalleryNotFoundError
from facelab.gallery._schema import APPLICATION, MIGRATIONS, SCHEMA_VERSION, TYPE_NAMES
from facelab.gallery._store_persons import PersonsSQL
from facelab.gallery._store_records import ImageWrite as ImageWrite
from facelab.gallery._store_records import RecordsSQL
from facelab.gallery._store_records import path_bytes as path_bytes
from facelab.gallery.records import (
    Collection,
    EmbeddingContract,
    check_text,
    metadata_json,
)
from facelab.registry import Registry

__all__ = ["GalleryStore", "Transaction", "STORE_BACKENDS", "register_backend", "open_store", "parse_url", "ImageWrite"]

_logger = logging.getLogger(__name__)

#: Backends by URL scheme (``"sqlite"``, ``"postgresql"``, ``"postgres"``).
STORE_BACKENDS: Registry = Registry("gallery backend")


def register_backend(*schemes: str):
    """Class decorator: register a :class:`GalleryStore` subclass for URL ``schemes``."""

    def decorator(cls: type) -> type:
        for scheme in schemes:
            STORE_BACKENDS.register(scheme)(cls)
        return cls

    return decorator


def parse_url(url: str | os.PathLike) -> tuple[str, str, dict[str, str]]:
    """Split a gallery URL into ``(scheme, target, options)``.

    A plain path (no ``scheme://``) means SQLite. Options are the query parameters.

    Example:
        >>> parse_url("sqlite:////tmp/g.db?precision=int8")
        ('sqlite', '/tmp/g.db', {'precision': 'int8'})
        >>> parse_url("people.db")
        ('sqlite', 'people.db', {})
    """
    text = os.fspath(url)
    if isinstance(text, bytes):  # pragma: no cover - bytes paths
        text = os.fsdecode(text)
    if "://" not in text:
        return "sqlite", text, {}
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        if not text.lower().startswith("sqlite:///"):
            raise ConfigError(f"gallery URL {text!r}: expected sqlite:///relative.db or sqlite:////absolute/path.db")
        target = text[len("sqlite:///") :].split("?", 1)[0]
        if not target:
            raise ConfigError(f"gallery URL {text!r} names no database file (expected sqlite:///path/to/gallery.db)")
        return scheme, target, options
    return scheme, text, options


def open_store(url: str | os.PathLike, *, exclude: Sequence[str] = (), **options: Any) -> GalleryStore:
    """Open (creating when needed) the gallery store at ``url``.

    Args:
        url: ``sqlite:///path.db``, a plain path, or ``postgresql://...``.
        exclude: query parameters meant for someone else (the :class:`~facelab.gallery.Gallery`'s).
        **options: backend options (they override the URL's query parameters); see each backend.

    Raises:
        ConfigError: an unknown scheme or option.
        GalleryError: the target is not a facelab gallery, is corrupt, or is too new.
    """
    import facelab.gallery._postgres  # noqa: F401  (registers "postgresql")
    import facelab.gallery._sqlite  # noqa: F401  (registers "sqlite")

    scheme, target, url_options = parse_url(url)
    if scheme not in STORE_BACKENDS:
        raise ConfigError(f"gallery URL {os.fspath(url)!r}: unknown scheme {scheme!r}; known: {STORE_BACKENDS.names()}")
    merged = {k: v for k, v in {**url_options, **options}.items() if k not in exclude}
    try:
        return STORE_BACKENDS.get(scheme)(target, **merged)
    except TypeError as exc:
        raise ConfigError(f"gallery URL {os.fspath(url)!r}: unsupported option ({exc})") from None


@dataclass
class Transaction:
    """State of one write transaction.

    Attributes:
        touched: ids of collections changed so far.
        revisions: after commit, the new revision of each touched collection.
    """

    touched: set[int] = field(default_factory=set)
    revisions: dict[int, int] = field(default_factory=dict)


_COLLECTION_COLUMNS = (
    "id, name, threshold, model_name, recognizer_sha256, preprocessing, dim, save_crops, metadata, revision, created_at"
)


class GalleryStore(PersonsSQL, RecordsSQL):
    """Base class of every gallery backend (connection handling is the subclass's).

    Subclasses implement :meth:`_connect_and_migrate`-style setup in their constructor and the
    hooks marked *backend* below; all SQL here uses ``?`` placeholders, which
    :meth:`_sql` rewrites for the backend's driver. Hooks raise their driver's errors; the shared
    code calls them through :meth:`_call` (``_x``, ``_xm``), which turns the known ones into
    :class:`~facelab.errors.GalleryError` (:meth:`_wrap_error`).

    Attributes:
        dialect: key of :data:`~facelab.gallery._schema.TYPE_NAMES`.
        url: what the store was opened from (without secrets, for messages).
        supports_vector_search: the backend can search embeddings itself (see
            :meth:`search_faces_db`).
    """

    dialect = "sqlite"
    supports_vector_search = False
    #: Folder of the backend's index snapshots (:mod:`facelab.gallery._index_snapshot`), ``None`` without.
    snapshot_dir: Any = None

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tx: Transaction | None = None
        self.url = ""

    # -- backend hooks -------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """*Backend*: run one statement (``?`` placeholders) and return a cursor."""
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """*Backend*: run one statement for many parameter rows."""
        raise NotImplementedError

    def _begin(self, write: bool) -> None:
        """*Backend*: start a transaction (``write``: take the write lock now)."""
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _encode_vector(self, vector: np.ndarray) -> Any:
        """*Backend*: a ``(D,)`` ``float32`` unit vector as the embedding column's parameter."""
        raise NotImplementedError

    def _decode_vectors(self, values: list[Any], dim: int) -> np.ndarray:
        """*Backend*: fetched embedding column values as ``(N, D)`` ``float32``."""
        raise NotImplementedError

    def _insert_faces(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """*Backend*: insert face rows (columns of :data:`_INSERT_FACE`) and return their ids in order."""
        raise NotImplementedError

    def _on_contract(self, collection_id: int, contract: EmbeddingContract) -> None:
        """*Backend*: the collection's embedding dimension became known (PostgreSQL builds its vector index)."""

    def _wrap_error(self, exc: Exception) -> Exception | None:
        """*Backend*: a :class:`~facelab.errors.GalleryError` for a driver error, or ``None`` to re-raise."""
        return None

    @contextmanager
    def bulk_load(self, collection_id: int) -> Iterator[None]:
        """*Backend*: a context in which many faces are added to a collection (PostgreSQL defers its HNSW build)."""
        yield

    def close(self) -> None:
        """Close the connection."""

    def erase_deleted(self) -> None:
        """Make deleted rows unrecoverable from the storage files where the backend can (SQLite: WAL checkpoint)."""

    def describe(self) -> dict[str, Any]:
        """Backend facts for ``facelab gallery info`` (file size, server version, index settings)."""
        return {"backend": self.dialect, "url": self.url}

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(self, hook: Any, *args: Any) -> Any:
        """``hook(*args)`` with driver errors turned into :class:`GalleryError` where the backend knows them."""
        try:
            return hook(*args)
        except GalleryError:
            raise
        except Exception as exc:  # noqa: BLE001 - driver errors become GalleryError where known
            wrapped = self._wrap_error(exc)
            if wrapped is None:
                raise
            raise wrapped from exc

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._call(self._execute, sql, params)

    def _xm(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._call(self._executemany, sql, rows)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._x(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._x(sql, params).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction; nested calls join the outer one.

        On leaving without error the touched collections' revisions are bumped and the
        transaction commits; on any exception (``KeyboardInterrupt`` included) it rolls back.
        """
        with self._lock:
            if self._tx is not None:
                yield self._tx
                return
            tx = Transaction()
            self._call(self._begin, True)
            self._tx = tx
            try:
                yield tx
                for cid in sorted(tx.touched):
                    row = self._x(
                        "UPDATE collections SET revision = revision + 1 WHERE id = ? RETURNING revision", (cid,)
                    )
                    got = row.fetchone()
                    if got is not None:
                        tx.revisions[cid] = int(got[0])
                self._commit()
            except BaseException:
                tx.revisions.clear()
                try:
                    self._rollback()
                finally:
                    self._tx = None
                raise
            self._tx = None
            try:
                self._after_commit(tx)
            except Exception:  # noqa: BLE001 - the transaction is committed; only housekeeping failed
                _logger.exception("%s: housekeeping after a commit failed", self.url)

    def _after_commit(self, tx: Transaction) -> None:
        """*Backend*: run after a write transaction committed (SQLite deletes stale index snapshots)."""

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees one consistent state."""
        with self._lock:
            if self._tx is not None:
                yield
                return
            self._begin(write=False)
            self._tx = Transaction()
            try:
                yield
            finally:
                self._tx = None
                self._commit()

    def _touch(self, collection_id: int) -> None:
        assert self._tx is not None, "writes run inside transaction()"
        self._tx.touched.add(int(collection_id))

    # -- schema ---------------------------------------------------------------------------------
    def _current_version(self) -> int:
        """*Backend*: the schema version in the database (0 = empty); raises for a foreign database."""
        raise NotImplementedError

    def _migrate(self) -> None:
        """Bring the schema up to :data:`~facelab.gallery._schema.SCHEMA_VERSION` in one transaction."""
        current = self._current_version()
        if current > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.url}: gallery schema version {current} was written by a newer facelab "
                f"(this one reads up to {SCHEMA_VERSION}); upgrade facelab"
            )
        if current == SCHEMA_VERSION:
            return
        types = {**TYPE_NAMES[self.dialect], "vec": self._vector_type()}
        with self._lock:
            self._begin(write=True)
            try:
                current = self._current_version()  # again, under the write lock: another process may have won
                if current == 0:
                    self._x("CREATE TABLE gallery_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    self._x("INSERT INTO gallery_meta (key, value) VALUES ('application', ?)", (APPLICATION,))
                    self._x("INSERT INTO gallery_meta (key, value) VALUES ('schema_version', '0')")
                    self._x("INSERT INTO gallery_meta (key, value) VALUES ('created_at', ?)", (repr(time.time()),))
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version]:
                        if isinstance(statement, tuple):
                            dialect, statement = statement
                            if dialect != self.dialect:
                                continue
                        self._x(statement.format(**types))
                    self._x("UPDATE gallery_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
                    _logger.info("%s: gallery schema migrated to version %d", self.url, version)
                self._commit()
            except BaseException:
                self._rollback()
                raise

    def _vector_type(self) -> str:
        return TYPE_NAMES[self.dialect]["blob"]

    def schema_version(self) -> int:
        """The schema version of the open gallery."""
        row = self._one("SELECT value FROM gallery_meta WHERE key = 'schema_version'")
        return int(row[0])

    # -- collections ----------------------------------------------------------------------------
    def _collection(self, row: Any) -> Collection:
        cid, name, threshold, model, sha, pre, dim, crops, meta, rev, created = row
        contract = None if sha is None else EmbeddingContract(model or "?", sha, pre or "", int(dim))
        return Collection(
            int(cid), name, None if threshold is None else float(threshold), contract, bool(crops),
            json.loads(meta), int(rev), float(created),
        )  # fmt: skip

    def create_collection(
        self,
        name: str,
        *,
        threshold: float | None = None,
        contract: EmbeddingContract | None = None,
        save_crops: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Collection:
        """Create a collection.

        Raises:
            GalleryError: the name is taken.
        """
        check_text(name, "collection name", allow_none=False)
        if not name:
            raise ConfigError("collection name must not be empty")
        meta = metadata_json(metadata)
        with self.transaction():
            if self.collection_by_name(name) is not None:
                raise GalleryError(f"{self.url}: a collection named {name!r} already exists")
            now = time.time()
            row = self._x(
                "INSERT INTO collections (name, threshold, save_crops, metadata, revision, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 0, ?, ?) RETURNING id",
                (name, None if threshold is None else float(threshold), int(bool(save_crops)), meta, now, now),
            ).fetchone()
            cid = int(row[0])
            if contract is not None:
                self.set_contract(cid, contract)
            self._touch(cid)
        return self.collection(cid)

    def collection(self, collection_id: int) -> Collection:
        """The collection with this id.

        Raises:
            GalleryError: no such collection.
        """
        row = self._one(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE id = ?", (int(collection_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no collection with id {collection_id}")
        return self._collection(row)

    def collection_by_name(self, name: str) -> Collection | None:
        """The collection called ``name``, or ``None``."""
        row = self._one(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE name = ?", (name,))
        return None if row is None else self._collection(row)

    def collections(self) -> list[Collection]:
        """Every collection, by id."""
        return [self._collection(r) for r in self._all(f"SELECT {_COLLECTION_COLUMNS} FROM collections ORDER BY id")]

    def set_contract(self, collection_id: int, contract: EmbeddingContract) -> None:
        """Fix the collection's embedding contract (only while it has none)."""
        with self.transaction():
            current = self.collection(collection_id)
            if current.contract is not None:
                current.contract.check(contract, f"collection {current.name!r}")
                return
            self._x(
                "UPDATE collections SET model_name = ?, recognizer_sha256 = ?, preprocessing = ?, dim = ?, "
                "contract_id = ?, updated_at = ? WHERE id = ?",
                (contract.model, contract.sha256, contract.preprocessing, contract.dim, contract.id, time.time(),
                 int(collection_id)),
            )  # fmt: skip
            self._on_contract(int(collection_id), contract)
            self._touch(collection_id)

    def update_collection(
        self,
        collection_id: int,
        *,
        name: str | None = None,
        threshold: float | None | str = "keep",
        save_crops: bool | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Collection:
        """Change a collection's name, threshold (``None`` clears it), crop setting or metadata."""
        with self.transaction():
            current = self.collection(collection_id)
            if name is not None and name != current.name:
                check_text(name, "collection name", allow_none=False)
                if self.collection_by_name(name) is not None:
                    raise GalleryError(f"{self.url}: a collection named {name!r} already exists")
                self._x("UPDATE collections SET name = ? WHERE id = ?", (name, current.id))
            if threshold != "keep":
                value = None if threshold is None else float(threshold)  # type: ignore[arg-type]
                self._x("UPDATE collections SET threshold = ? WHERE id = ?", (value, current.id))
            if save_crops is not None:
                self._x("UPDATE collections SET save_crops = ? WHERE id = ?", (int(bool(save_crops)), current.id))
            if metadata is not None:
                self._x("UPDATE collections SET metadata = ? WHERE id = ?", (metadata_json(metadata), current.id))
            self._x("UPDATE collections SET updated_at = ? WHERE id = ?", (time.time(), current.id))
            self._touch(current.id)
        return self.collection(collection_id)

    def delete_collection(self, collection_id: int) -> None:
        """Delete a collection with all its persons, images and faces."""
        with self.transaction():
            self.collection(collection_id)
            self._x("DELETE FROM collections WHERE id = ?", (int(collection_id),))
            self._touch(collection_id)  # no revision to bump any more: hooks see it gone

    def revision(self, collection_id: int) -> int:
        """The collection's current revision (bumped by every committed write)."""
        row = self._one("SELECT revision FROM collections WHERE id = ?", (int(collection_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no collection with id {collection_id}")
        return int(row[0])

    def counts(self, collection_id: int) -> dict[str, int]:
        """Numbers of persons (named / cluster), faces (assigned / with crop), images (done / error)."""
        cid = int(collection_id)
        persons = dict(self._all("SELECT kind, COUNT(*) FROM persons WHERE collection_id = ? GROUP BY kind", (cid,)))
        faces = self._one("SELECT COUNT(*), COUNT(person_id), COUNT(crop) FROM faces WHERE collection_id = ?", (cid,))
        images = dict(self._all("SELECT status, COUNT(*) FROM images WHERE collection_id = ? GROUP BY status", (cid,)))
        return {
            "persons": int(sum(persons.values())),
            "named_persons": int(persons.get("named", 0)),
            "cluster_persons": int(persons.get("cluster", 0)),
            "faces": int(faces[0]),
            "assigned_faces": int(faces[1]),
            "crops": int(faces[2]),
            "images": int(sum(images.values())),
            "image_errors": int(images.get("error", 0)),
        }

    # -- database-side vector search (backends with supports_vector_search) -----------------------
    def search_faces_db(
        self, collection_id: int, dim: int, queries: np.ndarray, k: int, *, exact: bool, assigned_only: bool
    ) -> list[list[tuple[int, int | None, float]]]:
        """*Backend*: per query, up to ``k`` ``(face_id, person_id, score)`` by score (cosine) descending."""
        raise GalleryError(f"{self.dialect} galleries search in memory only")

    def search_persons_db(
        self, collection_id: int, dim: int, queries: np.ndarray, k: int, *, exact: bool
    ) -> list[list[tuple[int, int, float]]]:
        """*Backend*: per query, up to ``k`` ``(person_id, best_face_id, score)``, a person scoring its best face."""
        raise GalleryError(f"{self.dialect} galleries search in memory only")
