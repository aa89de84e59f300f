"""``Gallery``: people and faces that persist, and 1:N search over them.

A :class:`Gallery` wraps a store (:mod:`facelab.gallery.store`: SQLite or PostgreSQL, opened by
URL) and, per collection, a search index kept in step with it:

* ``search="memory"`` (the default for SQLite): an in-memory index from
  :mod:`facelab.gallery.search` (exact FP32/FP16/INT8, or ANN), built from the store the first
  time a collection is searched and updated after every write this gallery commits. Each
  search first reads the collection's revision (one tiny query); when another process wrote in
  between, the index is rebuilt from the store, so searches never miss a committed face.
* ``search="database"`` (the default for PostgreSQL): pgvector answers (HNSW, or an exact scan
  with ``exact=True``).

Index snapshots (SQLite, exact index; :mod:`facelab.gallery._index_snapshot`): after a
collection's index is built from the store, a background thread writes its arrays next to the
database file (``<gallery.db>.index/``); the next process maps that file instead of reading
every embedding from SQLite, if and only if the collection's revision is still the one it
shows. Any committed write to the collection deletes its snapshots. ``snapshot=None`` (the
default) writes them for collections of at least
:data:`~facelab.gallery._index_snapshot.SNAPSHOT_MIN_FACES` faces, ``True`` for any size,
``False`` never (and ignores existing ones).

The search methods and their rules are in :mod:`facelab.gallery.matching`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelab.errors import ConfigError, GalleryError, GalleryNotFoundError
from facelab.gallery import _index_snapshot as snapshots
from facelab.gallery.matching import FaceMatch as FaceMatch
from facelab.gallery.matching import FaceSearch as FaceSearch
from facelab.gallery.matching import PersonMatch as PersonMatch
from facelab.gallery.matching import SearchMixin
from facelab.gallery.records import (
    DEFAULT_COLLECTION,
    Collection,
    EmbeddingContract,
    FaceArrays,
    Person,
    stored_vectors,
)
from facelab.gallery.store import GalleryStore, Transaction, open_store

__all__ = ["Gallery", "PersonMatch", "FaceMatch", "FaceSearch", "DEFAULT_COLLECTION", "SEARCH_ENGINES"]

_logger = logging.getLogger(__name__)

#: Where searches run: an in-memory index, or the database (PostgreSQL + pgvector only).
SEARCH_ENGINES = ("memory", "database")

_GALLERY_OPTIONS = ("search", "precision", "index", "snapshot")


@dataclass
class _Live:
    index: Any
    revision: int


def _groups(person_ids: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
    """Index groups: the person id, or ``-face_id`` for an unassigned face (a group of its own)."""
    return np.where(person_ids >= 0, person_ids, -face_ids).astype(np.int64)


class Gallery(SearchMixin):
    """A persistent face gallery (see the module docstring).

    Args:
        store: an open :class:`~facelab.gallery.store.GalleryStore`.
        search: ``"memory"`` or ``"database"`` (:data:`SEARCH_ENGINES`); ``None`` picks the
            backend's default.
        precision: in-memory index precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        index: in-memory index kind: ``"exact"`` or ``"ann"`` (the ``ann`` extra).
        snapshot: index snapshots (see the module docstring): ``None`` (SQLite, collections of
            at least ``SNAPSHOT_MIN_FACES`` faces), ``True`` (any size) or ``False``.

    Raises:
        ConfigError: a bad option, or ``snapshot=True`` where snapshots cannot be kept
            (not SQLite, not the in-memory exact index).

    Example:
        >>> from facelab import FaceAnalyzer
        >>> with Gallery.open("sqlite:///people.db") as g:          # doctest: +SKIP
        ...     fa = FaceAnalyzer()
        ...     g.enroll(["alice1.jpg", "alice2.jpg"], fa, name="Alice")
        ...     print(g.search_image("party.jpg", fa)[0].best)
    """

    def __init__(
        self,
        store: GalleryStore,
        *,
        search: str | None = None,
        precision: str = "fp32",
        index: str = "exact",
        snapshot: bool | str | None = None,
    ) -> None:
        self.store = store
        engine = search or ("database" if store.supports_vector_search else "memory")
        if engine not in SEARCH_ENGINES:
            raise ConfigError(f"gallery search must be one of {SEARCH_ENGINES}, got {engine!r}")
        if engine == "database" and not store.supports_vector_search:
            raise ConfigError(f"{store.dialect} galleries cannot search in the database; use search=memory")
        self.search_engine = engine
        self.precision = precision
        self.index_kind = index
        wanted = snapshots.snapshot_option(snapshot)
        possible = store.snapshot_dir is not None and engine == "memory" and index == "exact"
        if wanted and not possible:
            raise ConfigError(
                "index snapshots need an SQLite gallery searched in memory with the exact index "
                f"(this one: {store.dialect}, search={engine}, index={index})"
            )
        #: Snapshot policy: ``None`` (large collections), ``True`` (all) or ``False`` (off).
        self.snapshot = wanted if possible else False
        self._live: dict[int, _Live] = {}
        self._index_lock = threading.RLock()  # the in-memory indexes are shared by the threads using this gallery
        self._writers: list[threading.Thread] = []

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | os.PathLike, **options: Any) -> Gallery:
        """Open (creating when needed) the gallery at ``url``.

        Args:
            url: ``sqlite:///path.db`` (or a plain path) or ``postgresql://...``; query
                parameters carry options.
            **options: ``search``, ``precision``, ``index`` (this class's) and the backend's.

        Raises:
            ConfigError: an unknown scheme or option.
            GalleryError: not a facelab gallery, corrupt, or written by a newer facelab.
        """
        from facelab.gallery.store import parse_url

        _, _, url_options = parse_url(url)
        merged = {**url_options, **options}
        mine = {k: merged.pop(k) for k in _GALLERY_OPTIONS if k in merged}
        store = open_store(url, exclude=_GALLERY_OPTIONS, **merged)
        try:
            return cls(store, **mine)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Finish writing index snapshots, then close the store and drop the indexes."""
        self.wait_snapshots()
        self._live.clear()
        self.store.close()

    def wait_snapshots(self) -> None:
        """Wait until the index snapshots being written in the background are published (or given up)."""
        for writer in list(self._writers):
            writer.join()
        self._writers = [w for w in self._writers if w.is_alive()]

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections ------------------------------------------------------------------------------
    def collection(self, name: str = DEFAULT_COLLECTION, *, create: bool = False) -> Collection:
        """The collection called ``name`` (created empty when ``create`` and missing).

        Raises:
            GalleryError: it does not exist and ``create`` is false.
        """
        coll = self.store.collection_by_name(name)
        if coll is None:
            if not create:
                known = [c.name for c in self.store.collections()]
                raise GalleryNotFoundError(f"{self.store.url}: no collection named {name!r} (collections: {known})")
            try:
                coll = self.store.create_collection(name)
            except GalleryError:  # another process created it meanwhile
                coll = self.store.collection_by_name(name)
                if coll is None:
                    raise
        return coll

    def collections(self) -> list[Collection]:
        """Every collection."""
        return self.store.collections()

    def create_collection(self, name: str, **fields: Any) -> Collection:
        """Create a collection (``threshold``, ``contract``, ``save_crops``, ``metadata``)."""
        return self.store.create_collection(name, **fields)

    def delete_collection(self, name: str) -> None:
        """Delete a collection and everything in it."""
        coll = self.collection(name)
        self.store.delete_collection(coll.id)
        self._live.pop(coll.id, None)
        self.store.erase_deleted()

    def ensure_contract(self, collection: Collection, contract: EmbeddingContract) -> Collection:
        """Fix ``collection``'s contract to ``contract`` when it has none, else check they agree.

        Raises:
            ContractMismatchError: it holds another model's embeddings (the message names both).
        """
        if collection.contract is not None:
            collection.contract.check(contract, f"collection {collection.name!r}")
            return collection
        self.store.set_contract(collection.id, contract)
        return self.store.collection(collection.id)

    def bulk_load(self, collection: str = DEFAULT_COLLECTION) -> Any:
        """Context for adding many faces at once (PostgreSQL builds its HNSW index once at the end).

        Example:
            >>> with gallery.bulk_load("photos"):              # doctest: +SKIP
            ...     load_shards(gallery, "shards/", collection="photos")
        """
        return self.store.bulk_load(self.collection(collection).id)

    # -- keeping indexes in step ------------------------------------------------------------------
    def committed(self, tx: Transaction, collection_id: int, apply: Callable[[Any], None]) -> None:
        """Apply a committed change to the collection's in-memory index (or drop it to rebuild).

        ``apply(index)`` replays the change; it runs only when the transaction's revision follows
        the index's directly (no other writer in between).
        """
        with self._index_lock:
            live = self._live.get(collection_id)
            new = tx.revisions.get(collection_id)
            if live is None or new is None:
                return
            if new != live.revision + 1:
                self._live.pop(collection_id, None)
                return
            try:
                apply(live.index)
                live.revision = new
            except Exception:  # noqa: BLE001 - the store is right; rebuild the index from it next time
                _logger.exception("in-memory index update failed; it will be rebuilt from the store")
                self._live.pop(collection_id, None)

    def index_for(self, collection: Collection) -> Any:
        """The collection's in-memory index, rebuilt from the store when it is behind."""
        with self._index_lock:
            return self._index_for(collection)

    def _index_for(self, collection: Collection) -> Any:
        from facelab.gallery.search import make_index

        live = self._live.get(collection.id)
        if live is not None and live.revision == self.store.revision(collection.id):
            return live.index
        self._live.pop(collection.id, None)  # let a stale index (maybe a mapped snapshot) go before building
        dim = collection.contract.dim if collection.contract else 1
        if self.precision == "int8" and dim < 256:
            _logger.warning(
                "collection %r: INT8 (x736) search is calibrated for 512-d embeddings; %d-d unit vectors have "
                "larger components, some of which clip at 127/736 (use fp16 or fp32)", collection.name, dim,
            )  # fmt: skip
        if self.snapshot is not False:
            loaded = snapshots.load_index(self.store, collection, self.precision)
            if loaded is not None:
                self._live[collection.id] = _Live(*loaded)
                return loaded[0]
        options = {"precision": self.precision} if self.index_kind == "exact" else {}
        if self.index_kind == "exact":
            # no regrowth while loading, room to grow after (untouched capacity costs no memory)
            expected = self.store.face_count(collection.id)
            options["capacity"] = max(1024, expected + expected // 8)
        index = make_index(self.index_kind, dim, **options)
        count, revision = snapshots.build_from_store(self.store, collection.id, index, _groups)
        self._live[collection.id] = _Live(index, revision)
        _logger.info("collection %r: search index built with %d faces", collection.name, count)
        wanted = self.snapshot or (self.snapshot is None and count >= snapshots.SNAPSHOT_MIN_FACES)
        if wanted and count and collection.contract is not None:
            writer = snapshots.SnapshotWriter(self.store, collection, index, revision)
            self._writers = [w for w in self._writers if w.is_alive()] + [writer]
            writer.start()
        return index

    def faces_added(
        self, tx: Transaction, cid: int, ids: Sequence[int], vecs: Sequence[np.ndarray], persons: Sequence[int | None]
    ) -> None:
        """Add just-committed faces (``ids``, their embeddings, their person ids) to the collection's index."""
        face_ids = np.asarray(ids, np.int64)
        person_ids = np.asarray([-1 if p is None else p for p in persons], np.int64)
        rows = stored_vectors(list(vecs))
        self.committed(tx, cid, lambda index: index.add(face_ids, rows, _groups(person_ids, face_ids)))

    # -- persons ----------------------------------------------------------------------------------
    def add_person(
        self,
        name: str | None,
        *,
        collection: str = DEFAULT_COLLECTION,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        kind: str = "named",
    ) -> Person:
        """Create a person without faces (see :meth:`enroll` to add faces)."""
        coll = self.collection(collection, create=True)
        with self.store.transaction() as tx:
            person = self.store.add_person(coll.id, name, external_id=external_id, metadata=metadata, kind=kind)
        self.committed(tx, coll.id, lambda index: None)
        return person

    def person(self, person_id: int) -> Person:
        """The person with this id."""
        return self.store.person(person_id)

    def persons(self, collection: str = DEFAULT_COLLECTION, **filters: Any) -> list[Person]:
        """Persons of a collection (filters: ``name``, ``external_id``, ``search``, ``kind``, ``limit``, ``offset``)."""
        return self.store.persons(self.collection(collection).id, **filters)

    def find_person(self, name_or_id: str | int, collection: str = DEFAULT_COLLECTION) -> Person:
        """The person with this id, external id or (unique) name.

        Raises:
            GalleryError: none, or several persons of that name.
        """
        coll = self.collection(collection)
        text = str(name_or_id)
        if isinstance(name_or_id, int) or text.isdigit():
            try:
                person = self.store.person(int(text))
                if person.collection_id == coll.id:
                    return person
            except GalleryError:
                pass
        by_ext = self.store.persons(coll.id, external_id=text)
        if by_ext:
            return by_ext[0]
        named = self.store.persons(coll.id, name=text)
        if len(named) == 1:
            return named[0]
        if not named:
            raise GalleryNotFoundError(f"no person {text!r} in collection {coll.name!r}")
        raise GalleryError(f"{len(named)} persons are named {text!r} (ids {[p.id for p in named]}); give an id")

    def update_person(self, person_id: int, **changes: Any) -> Person:
        """Change ``name``, ``external_id``, ``metadata`` or ``kind`` of a person."""
        with self.store.transaction() as tx:
            person = self.store.update_person(person_id, **changes)
        self.committed(tx, person.collection_id, lambda index: None)
        return person

    def delete_person(self, person_id: int, *, keep_faces: bool = False) -> int:
        """Delete a person with its faces, embeddings, crops and index entries.

        With ``keep_faces`` (photo libraries) the faces stay, unassigned. Afterwards the store
        makes the deleted rows unrecoverable where it can (SQLite: ``secure_delete`` plus a WAL
        checkpoint; see :meth:`GalleryStore.erase_deleted`).

        Returns:
            The number of faces deleted (or unassigned).
        """
        person = self.store.person(person_id)
        with self.store.transaction() as tx:
            ids = self.store.delete_person(person.id, keep_faces=keep_faces)
        face_ids = np.asarray(ids, np.int64)
        if keep_faces:
            self.committed(tx, person.collection_id, lambda index: index.set_groups(face_ids, -face_ids))
        else:
            self.committed(tx, person.collection_id, lambda index: index.remove(face_ids))
        if not keep_faces:
            self.store.erase_deleted()
        return len(ids)

    def merge_persons(self, into: int, others: Sequence[int]) -> int:
        """Move all faces of ``others`` to ``into`` and delete ``others``; returns the faces moved."""
        target = self.store.person(into)
        with self.store.transaction() as tx:
            moved = np.asarray(self.store.merge_persons(target.id, list(others)), np.int64)
        self.committed(tx, target.collection_id, lambda index: index.set_groups(moved, np.full(len(moved), target.id)))
        return len(moved)

    def faces(self, person_id: int, *, with_embeddings: bool = False) -> list[Any]:
        """The faces of a person (:class:`~facelab.gallery.records.FaceRecord`)."""
        return self.store.faces(person_id=person_id, with_embeddings=with_embeddings)

    def face_crop(self, face_id: int) -> bytes | None:
        """The JPEG crop stored for a face, or ``None``."""
        return self.store.face_crop(face_id)

    def delete_faces(self, face_ids: Sequence[int]) -> int:
        """Delete faces by id (their index entries too); returns how many existed."""
        with self.store.transaction() as tx:
            gone = np.asarray(self.store.delete_faces(face_ids), np.int64)
        for cid in tx.touched:  # the collections of the faces that existed
            self.committed(tx, cid, lambda index: index.remove(gone))
        self.store.erase_deleted()
        return len(gone)

    # -- the clustering interface -----------------------------------------------------------------
    def face_arrays(self, collection: str = DEFAULT_COLLECTION) -> FaceArrays:
        """Every face of a collection as arrays (ids, embeddings, image ids, person ids); see :class:`FaceArrays`."""
        return self.store.face_arrays(self.collection(collection).id)[0]

    def assign_faces(
        self,
        face_ids: Sequence[int],
        person_ids: Sequence[int | None],
        *,
        collection: str = DEFAULT_COLLECTION,
        assigned_by: str = "cluster",
    ) -> int:
        """Attach faces to persons in one transaction (``None``/``-1`` detaches); returns the count."""
        coll = self.collection(collection)
        with self.store.transaction() as tx:
            n = self.store.assign_faces(coll.id, face_ids, person_ids, assigned_by=assigned_by)
        fids = np.asarray(face_ids, np.int64)
        pids = np.asarray([-1 if p is None else int(p) for p in person_ids], np.int64)
        self.committed(tx, coll.id, lambda index: index.set_groups(fids, _groups(pids, fids)))
        return n

    def apply_clusters(
        self,
        face_ids: Sequence[int],
        labels: Sequence[int],
        *,
        collection: str = DEFAULT_COLLECTION,
        existing: dict[int, int] | None = None,
    ) -> dict[int, int]:
        """Store a clustering: one transaction creates an unnamed person per new label and assigns the faces.

        Args:
            face_ids: ``(N,)`` faces.
            labels: ``(N,)`` cluster label per face; ``-1`` = noise (unassigned).
            collection: the collection.
            existing: labels that map to persons already in the gallery (``label -> person id``).

        Returns:
            ``label -> person id`` for every label used.
        """
        coll = self.collection(collection)
        if len(face_ids) != len(labels):
            raise ConfigError(f"apply_clusters: {len(face_ids)} face ids but {len(labels)} labels")
        mapping = dict(existing or {})
        with self.store.transaction() as tx:
            new = sorted({int(lab) for lab in labels if int(lab) >= 0} - set(mapping))
            ids = self.store.add_persons(coll.id, [(None, None, None)] * len(new), kind="cluster")
            mapping.update(zip(new, ids))
            persons = [mapping[int(lab)] if int(lab) >= 0 else None for lab in labels]
            self.store.assign_faces(coll.id, face_ids, persons, assigned_by="cluster")
        fids = np.asarray(face_ids, np.int64)
        pids = np.asarray([-1 if p is None else p for p in persons], np.int64)
        self.committed(tx, coll.id, lambda index: index.set_groups(fids, _groups(pids, fids)))
        return mapping

    def add_links(self, pairs: Sequence[tuple[int, int]], kind: str, *, collection: str = DEFAULT_COLLECTION) -> int:
        """Record ``must_link``/``cannot_link`` constraints between faces (for clustering)."""
        coll = self.collection(collection)
        with self.store.transaction() as tx:
            n = self.store.add_links(coll.id, pairs, kind)
        self.committed(tx, coll.id, lambda index: None)
        return n

    def links(self, collection: str = DEFAULT_COLLECTION, kind: str | None = None) -> list[tuple[int, int, str]]:
        """The face constraints of a collection."""
        return self.store.links(self.collection(collection).id, kind)

    # -- enrolment, indexing (implemented in their modules) --------------------------------------
    def enroll(self, images: Sequence[Any], analyzer: Any, **options: Any) -> Any:
        """Enrol a person's photos under the quality policy; see :func:`facelab.gallery.enroll.enroll`."""
        from facelab.gallery.enroll import enroll

        return enroll(self, images, analyzer, **options)

    def index_photos(self, inputs: Sequence[Any], analyzer: Any, **options: Any) -> Any:
        """Index a photo library; see :func:`facelab.gallery.indexing.index_photos`."""
        from facelab.gallery.indexing import index_photos

        return index_photos(self, inputs, analyzer, **options)

    # -- facts ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Backend facts and, per collection, its contract, threshold and counts."""
        out = self.store.describe()
        out["search"] = {"engine": self.search_engine, "precision": self.precision, "index": self.index_kind}
        out["collections"] = [
            {
                "name": c.name,
                "id": c.id,
                "threshold": c.threshold,
                "contract": None if c.contract is None else c.contract.to_dict(),
                "save_crops": c.save_crops,
                "revision": c.revision,
                **self.store.counts(c.id),
            }
            for c in self.store.collections()
        ]
        return out
