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

Search rules (InsightFace Server 0.2's): a person's score is the max cosine similarity over
its faces; persons rank by score descending, then id ascending; within a person the lowest
face id wins a tie. The "same person" threshold is the one given to the call, else the
collection's, else the analyser's (its recogniser card's); see
:func:`facelab.recognition.compare.resolve_threshold`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError, GalleryError, GalleryNotFoundError
from facelab.gallery.contract import contract_of
from facelab.gallery.records import Collection, EmbeddingContract, FaceArrays, Person, stored_vectors, unit_embeddings
from facelab.gallery.store import GalleryStore, Transaction, open_store
from facelab.recognition.compare import resolve_threshold

__all__ = ["Gallery", "PersonMatch", "FaceMatch", "FaceSearch", "DEFAULT_COLLECTION", "SEARCH_ENGINES"]

_logger = logging.getLogger(__name__)

#: Collection used when none is named.
DEFAULT_COLLECTION = "default"

#: Where searches run: an in-memory index, or the database (PostgreSQL + pgvector only).
SEARCH_ENGINES = ("memory", "database")

_GALLERY_OPTIONS = ("search", "precision", "index")


@dataclass(frozen=True)
class PersonMatch:
    """One person found for a query.

    Attributes:
        person_id: the person.
        name: their name (``None`` for an unnamed cluster person).
        external_id: their external id, or ``None``.
        score: cosine similarity of the best-matching face.
        face_id: that face.
        matched: ``score >= threshold`` (``None`` when no threshold is known).
    """

    person_id: int
    name: str | None
    external_id: str | None
    score: float
    face_id: int
    matched: bool | None

    def label(self) -> str:
        """The name, or ``"person <id>"``."""
        return self.name if self.name is not None else f"person {self.person_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "person_id": self.person_id,
            "name": self.name,
            "external_id": self.external_id,
            "score": self.score,
            "face_id": self.face_id,
            "matched": self.matched,
        }


@dataclass(frozen=True)
class FaceMatch:
    """One stored face found for a query (assigned or not).

    Attributes:
        face_id / person_id / image_id: the face and its owners (``None`` when unassigned / enrolled).
        score: cosine similarity.
    """

    face_id: int
    person_id: int | None
    score: float


@dataclass
class FaceSearch:
    """The persons found for one query face.

    Attributes:
        face: the query :class:`~facelab.structures.Face` (``None`` for a search by embedding).
        matches: top persons, best first.
        threshold: the threshold applied (``None``: none known).
    """

    face: Any
    matches: list[PersonMatch] = field(default_factory=list)
    threshold: float | None = None

    @property
    def best(self) -> PersonMatch | None:
        """The top person when it passes the threshold (or when there is no threshold), else ``None``."""
        if not self.matches or self.matches[0].matched is False:
            return None
        return self.matches[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the query face without its embedding)."""
        face = None
        if self.face is not None:
            face = {k: v for k, v in self.face.to_dict().items() if k != "embedding"}
        best = self.best
        return {
            "face": face,
            "threshold": self.threshold,
            "identity": None if best is None else best.to_dict(),
            "matches": [m.to_dict() for m in self.matches],
        }


@dataclass
class _Live:
    index: Any
    revision: int


def _groups(person_ids: np.ndarray, face_ids: np.ndarray) -> np.ndarray:
    """Index groups: the person id, or ``-face_id`` for an unassigned face (a group of its own)."""
    return np.where(person_ids >= 0, person_ids, -face_ids).astype(np.int64)


class Gallery:
    """A persistent face gallery (see the module docstring).

    Args:
        store: an open :class:`~facelab.gallery.store.GalleryStore`.
        search: ``"memory"`` or ``"database"`` (:data:`SEARCH_ENGINES`); ``None`` picks the
            backend's default.
        precision: in-memory index precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        index: in-memory index kind: ``"exact"`` or ``"ann"`` (the ``ann`` extra).

    Example:
        >>> from facelab import FaceAnalyzer
        >>> with Gallery.open("sqlite:///people.db") as g:          # doctest: +SKIP
        ...     fa = FaceAnalyzer()
        ...     g.enroll(["alice1.jpg", "alice2.jpg"], fa, name="Alice")
        ...     print(g.search_image("party.jpg", fa)[0].best)
    """

    def __init__(
        self, store: GalleryStore, *, search: str | None = None, precision: str = "fp32", index: str = "exact"
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
        self._live: dict[int, _Live] = {}
        # One gallery may serve several threads (the service's workers, an index job): the
        # in-memory indexes are read and changed only under this lock.
        self._lock = threading.RLock()

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
        """Close the store and drop the indexes."""
        self._live.clear()
        self.store.close()

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
        with self._lock:
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

    # -- keeping indexes in step ------------------------------------------------------------------
    def committed(self, tx: Transaction, collection_id: int, apply: Callable[[Any], None]) -> None:
        """Apply a committed change to the collection's in-memory index (or drop it to rebuild).

        ``apply(index)`` replays the change; it runs only when the transaction's revision follows
        the index's directly (no other writer in between).
        """
        with self._lock:
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
        from facelab.gallery.search import make_index

        with self._lock:
            return self._index_locked(collection, make_index)

    def _index_locked(self, collection: Collection, make_index: Callable[..., Any]) -> Any:
        live = self._live.get(collection.id)
        if live is not None and live.revision == self.store.revision(collection.id):
            return live.index
        arrays, revision = self.store.face_arrays(collection.id)
        dim = arrays.embeddings.shape[1] or (collection.contract.dim if collection.contract else 0)
        options = {"precision": self.precision} if self.index_kind == "exact" else {}
        index = make_index(self.index_kind, dim or 1, **options)
        if len(arrays):
            index.add(arrays.ids, arrays.embeddings, _groups(arrays.person_ids, arrays.ids))
        self._live[collection.id] = _Live(index, revision)
        _logger.info("collection %r: search index built with %d faces", collection.name, len(arrays))
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
        records = self.store.faces(face_ids=face_ids)
        with self.store.transaction() as tx:
            gone = np.asarray(self.store.delete_faces([f.id for f in records]), np.int64)
        for cid in {f.collection_id for f in records}:
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

    # -- search -----------------------------------------------------------------------------------
    def threshold_for(self, coll: Collection, threshold: Any, analyzer: Any) -> float | None:
        """The threshold a search applies.

        ``threshold`` (a number or a calibration JSON), else the collection's, else the analyser's.
        """
        if threshold is not None:
            return resolve_threshold(threshold)
        if coll.threshold is not None:
            return coll.threshold
        return None if analyzer is None else analyzer.threshold

    def search_embeddings(
        self,
        embeddings: Any,
        *,
        k: int = 5,
        collection: str = DEFAULT_COLLECTION,
        threshold: float | str | os.PathLike | None = None,
        contract: EmbeddingContract | None = None,
        exact: bool | None = None,
        analyzer: Any = None,
    ) -> list[FaceSearch]:
        """Top-``k`` persons for each query embedding.

        Args:
            embeddings: ``(D,)`` or ``(Q, D)`` (normalised here).
            k: persons per query.
            collection: the collection searched.
            threshold: cosine threshold, or a calibration JSON path; default: the collection's,
                else ``analyzer``'s.
            contract: the queries' embedding contract, checked against the collection's.
            exact: database engine only: exact scan (``True``) or HNSW (default).
            analyzer: the analyser the embeddings came from (for its default threshold).

        Returns:
            One :class:`FaceSearch` per query (``face`` is ``None``).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        coll = self.collection(collection)
        if coll.contract is None:
            queries = unit_embeddings(embeddings)
            return [FaceSearch(None, [], self.threshold_for(coll, threshold, analyzer)) for _ in queries]
        if contract is not None:
            coll.contract.check(contract, f"collection {coll.name!r}")
        queries = unit_embeddings(embeddings, coll.contract.dim)
        thr = self.threshold_for(coll, threshold, analyzer)
        raw = self._person_hits(coll, queries, int(k), exact)
        names = {pid: self.store.person(pid) for pid in {h[0] for hits in raw for h in hits}}
        out = []
        for hits in raw:
            matches = [
                PersonMatch(
                    pid, names[pid].name, names[pid].external_id, score, fid, None if thr is None else score >= thr
                )
                for pid, fid, score in hits
            ]
            out.append(FaceSearch(None, matches, thr))
        return out

    def _person_hits(self, coll: Collection, queries: np.ndarray, k: int, exact: bool | None):
        if self.search_engine == "database":
            return self.store.search_persons_db(coll.id, coll.contract.dim, queries, k, exact=bool(exact))
        with self._lock:
            return self._memory_person_hits(coll, queries, k)

    def _memory_person_hits(self, coll: Collection, queries: np.ndarray, k: int) -> list:
        index = self.index_for(coll)
        out = []
        for q in queries:
            want = k
            while True:  # unassigned faces are groups of their own (negative); ask for more until k persons
                hits = index.search_groups(q[None], want)[0]
                keep = [
                    (int(g), int(f), float(s)) for g, f, s in zip(hits.groups, hits.vector_ids, hits.scores) if g >= 0
                ]
                if len(keep) >= k or len(hits.groups) < want:
                    break
                want *= 4
            out.append(keep[:k])
        return out

    def search_faces(
        self, embeddings: Any, *, k: int = 10, collection: str = DEFAULT_COLLECTION, exact: bool | None = None
    ) -> list[list[FaceMatch]]:
        """Top-``k`` stored faces (assigned or not) per query embedding: "find this face in my photos"."""
        coll = self.collection(collection)
        if coll.contract is None:
            return [[] for _ in unit_embeddings(embeddings)]
        queries = unit_embeddings(embeddings, coll.contract.dim)
        if self.search_engine == "database":
            raw = self.store.search_faces_db(
                coll.id, coll.contract.dim, queries, k, exact=bool(exact), assigned_only=False
            )
            return [[FaceMatch(f, p, s) for f, p, s in hits] for hits in raw]
        with self._lock:
            index = self.index_for(coll)
            found = index.search(queries, k)
            groups_of = [index.groups_of(h.ids) if len(h.ids) else np.zeros(0, np.int64) for h in found]
        out = []
        for hits, groups in zip(found, groups_of):
            out.append(
                [
                    FaceMatch(int(f), int(g) if g >= 0 else None, float(s))
                    for f, g, s in zip(hits.ids, groups, hits.scores)
                ]
            )
        return out

    def search_image(self, image: Any, analyzer: Any, **options: Any) -> list[FaceSearch]:
        """Persons for every face of one image (see :meth:`search_images`)."""
        return self.search_images([image], analyzer, **options)[0]

    def search_images(
        self,
        images: Sequence[Any],
        analyzer: Any,
        *,
        k: int = 5,
        collection: str = DEFAULT_COLLECTION,
        threshold: float | str | os.PathLike | None = None,
        max_num: int = 0,
        exact: bool | None = None,
    ) -> list[list[FaceSearch]]:
        """Detect, embed and search every face of each image.

        Args:
            images: paths, bytes, ``(H, W, 3)`` ``uint8`` BGR arrays or PIL images.
            analyzer: the :class:`~facelab.pipeline.FaceAnalyzer`; its recogniser must match the
                collection's contract.
            k: persons per face.
            collection: the collection searched.
            threshold: as :meth:`search_embeddings`.
            max_num: at most this many faces per image (0 = all).
            exact: as :meth:`search_embeddings`.

        Returns:
            Per image, one :class:`FaceSearch` per detected face (detector order).
        """
        coll = self.collection(collection)
        contract = contract_of(analyzer)
        if coll.contract is not None:
            coll.contract.check(contract, f"collection {coll.name!r}")
        per_image = analyzer.analyze_batch(list(images), max_num=max_num)
        faces = [f for found in per_image for f in found if f.embedding is not None]
        if not faces:
            thr = self.threshold_for(coll, threshold, analyzer)
            return [[FaceSearch(f, [], thr) for f in found] for found in per_image]
        results = iter(
            self.search_embeddings(
                np.stack([f.embedding for f in faces]), k=k, collection=collection, threshold=threshold,
                contract=contract, exact=exact, analyzer=analyzer,
            )
        )  # fmt: skip
        out = []
        for found in per_image:
            row = []
            for face in found:
                result = next(results)
                result.face = face
                row.append(result)
            out.append(row)
        return out

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
