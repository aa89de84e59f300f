"""The SQL for persons, faces, face links and images, shared by every gallery backend.

:class:`RecordsSQL` is a mixin of :class:`facelab.gallery.store.GalleryStore`: it relies on the
store's plumbing (``_x``, ``_one``, ``_all``, ``_executemany``, ``transaction``, ``_touch``) and
backend hooks (``_encode_vector``, ``_decode_vectors``, ``_insert_faces``). Queries use ``?``
placeholders; every value is a bound parameter.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, GalleryError, GalleryNotFoundError
from facelab.gallery.records import (
    ASSIGNERS,
    FACE_SOURCES,
    LINK_KINDS,
    PERSON_KINDS,
    FaceArrays,
    FaceRecord,
    ImageRecord,
    NewFace,
    Person,
    check_text,
    metadata_json,
    unit_embeddings,
)

__all__ = ["RecordsSQL", "ImageWrite", "path_bytes"]

#: Rows fetched per round trip when reading many faces.
_FETCH = 8192


@dataclass
class ImageWrite:
    """One indexed photo to record (see :meth:`GalleryStore.write_images`).

    Attributes:
        path: the file (absolute).
        sha256 / size / mtime_ns: content hash and ``stat`` values.
        width / height: decoded size, ``None`` after an error.
        error: why it failed, or ``None``.
        faces: faces found (``image_key`` is ignored; they belong to this image).
    """

    path: Path
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    faces: list[NewFace] = field(default_factory=list)


def path_bytes(path: str | os.PathLike) -> bytes:
    """The OS bytes of a path (lossless for names that are not UTF-8)."""
    return os.fsencode(path)


def _path_of(value: Any) -> Path | None:
    return None if value is None else Path(os.fsdecode(bytes(value)))


def _f32(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if value is None:
        return None
    return np.frombuffer(bytes(value), dtype="<f4").reshape(shape).astype(np.float32)


def _blob_f32(array: Any, size: int) -> bytes | None:
    if array is None:
        return None
    arr = np.asarray(array, dtype="<f4").reshape(-1)
    if arr.size != size:
        raise ConfigError(f"expected {size} numbers, got {arr.size}")
    return arr.tobytes()


_PERSON_COLUMNS = (
    "p.id, p.collection_id, p.name, p.external_id, p.kind, p.metadata, p.created_at, p.updated_at, "
    "(SELECT COUNT(*) FROM faces f WHERE f.person_id = p.id)"
)
_FACE_COLUMNS = (
    "f.id, f.collection_id, f.person_id, f.image_id, f.source, f.assigned_by, f.bbox, f.kps, f.det_score, f.quality, "
    "f.quality_detail, f.source_sha256, COALESCE(f.source_path, i.path), f.crop IS NOT NULL, f.created_at"
)
#: Number of columns in :data:`_FACE_COLUMNS`.
_FACE_WIDTH = 15
_IMAGE_COLUMNS = "id, collection_id, path, sha256, size, mtime_ns, width, height, status, error, face_count, indexed_at"


class RecordsSQL:
    """Persons, faces, links and images (a mixin of :class:`~facelab.gallery.store.GalleryStore`)."""

    # -- persons --------------------------------------------------------------------------------
    def _person(self, row: Any) -> Person:
        pid, cid, name, ext, kind, meta, created, updated, count = row
        return Person(int(pid), int(cid), name, ext, kind, json.loads(meta), int(count), float(created), float(updated))

    def add_person(
        self,
        collection_id: int,
        name: str | None,
        *,
        external_id: str | None = None,
        kind: str = "named",
        metadata: dict[str, Any] | None = None,
    ) -> Person:
        """Create a person.

        Raises:
            GalleryError: ``external_id`` is already used in the collection.
            ConfigError: a bad name, id, kind or metadata.
        """
        return self.person(self.add_persons(collection_id, [(name, external_id, metadata)], kind=kind)[0])

    def add_persons(
        self,
        collection_id: int,
        persons: Sequence[tuple[str | None, str | None, dict[str, Any] | None]],
        *,
        kind: str = "named",
    ) -> list[int]:
        """Create many persons in one transaction; ``persons`` holds ``(name, external_id, metadata)``.

        Returns:
            Their ids, in order.
        """
        if kind not in PERSON_KINDS:
            raise ConfigError(f"person kind must be one of {PERSON_KINDS}, got {kind!r}")
        rows = []
        now = time.time()
        for name, ext, meta in persons:
            check_text(name, "person name")
            check_text(ext, "external id")
            rows.append((name, ext, meta))
        ids = []
        with self.transaction():
            self.collection(collection_id)
            for name, ext, meta in rows:
                if ext is not None:
                    other = self._one(
                        "SELECT id FROM persons WHERE collection_id = ? AND external_id = ?", (int(collection_id), ext)
                    )
                    if other is not None:
                        raise GalleryError(f"external id {ext!r} is already used by person {other[0]}")
                row = self._x(
                    "INSERT INTO persons (collection_id, name, external_id, kind, metadata, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (int(collection_id), name, ext, kind, metadata_json(meta), now, now),
                ).fetchone()
                ids.append(int(row[0]))
            self._touch(collection_id)
        return ids

    def person(self, person_id: int) -> Person:
        """The person with this id.

        Raises:
            GalleryError: no such person.
        """
        row = self._one(f"SELECT {_PERSON_COLUMNS} FROM persons p WHERE p.id = ?", (int(person_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no person with id {person_id}")
        return self._person(row)

    def persons(
        self,
        collection_id: int,
        *,
        name: str | None = None,
        external_id: str | None = None,
        search: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Person]:
        """Persons of a collection by id, optionally filtered.

        Args:
            collection_id: the collection.
            name: exact name.
            external_id: exact external id.
            search: case-insensitive substring of the name or external id (no wildcards).
            kind: ``"named"`` or ``"cluster"``.
            limit: at most this many (``None``: all).
            offset: skip this many first.
        """
        where, params = ["p.collection_id = ?"], [int(collection_id)]
        if name is not None:
            where.append("p.name = ?")
            params.append(name)
        if external_id is not None:
            where.append("p.external_id = ?")
            params.append(external_id)
        if kind is not None:
            where.append("p.kind = ?")
            params.append(kind)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(LOWER(p.name) LIKE ? ESCAPE '\\' OR LOWER(p.external_id) LIKE ? ESCAPE '\\')")
            params += [f"%{escaped}%", f"%{escaped}%"]
        sql = f"SELECT {_PERSON_COLUMNS} FROM persons p WHERE {' AND '.join(where)} ORDER BY p.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        elif offset:
            sql += f" LIMIT -1 OFFSET {int(offset)}" if self.dialect == "sqlite" else f" OFFSET {int(offset)}"
        return [self._person(r) for r in self._all(sql, params)]

    def update_person(
        self,
        person_id: int,
        *,
        name: str | None | str = "keep",
        external_id: str | None | str = "keep",
        metadata: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> Person:
        """Change a person's name, external id (``None`` clears), metadata or kind."""
        with self.transaction():
            person = self.person(person_id)
            sets, params = ["updated_at = ?"], [time.time()]
            if name != "keep":
                sets.append("name = ?")
                params.append(check_text(name, "person name"))
            if external_id != "keep":
                check_text(external_id, "external id")
                if external_id is not None:
                    other = self._one(
                        "SELECT id FROM persons WHERE collection_id = ? AND external_id = ? AND id <> ?",
                        (person.collection_id, external_id, person.id),
                    )
                    if other is not None:
                        raise GalleryError(f"external id {external_id!r} is already used by person {other[0]}")
                sets.append("external_id = ?")
                params.append(external_id)
            if metadata is not None:
                sets.append("metadata = ?")
                params.append(metadata_json(metadata))
            if kind is not None:
                if kind not in PERSON_KINDS:
                    raise ConfigError(f"person kind must be one of {PERSON_KINDS}, got {kind!r}")
                sets.append("kind = ?")
                params.append(kind)
            self._x(f"UPDATE persons SET {', '.join(sets)} WHERE id = ?", (*params, person.id))
            self._touch(person.collection_id)
        return self.person(person_id)

    def delete_person(self, person_id: int, *, keep_faces: bool = False) -> list[int]:
        """Delete a person; its faces go with it unless ``keep_faces`` (then they become unassigned).

        Returns:
            Ids of the faces deleted (or unassigned).
        """
        with self.transaction():
            person = self.person(person_id)
            ids = [int(r[0]) for r in self._all("SELECT id FROM faces WHERE person_id = ? ORDER BY id", (person.id,))]
            if keep_faces:
                self._x("UPDATE faces SET person_id = NULL, assigned_by = NULL WHERE person_id = ?", (person.id,))
            else:
                self._x("DELETE FROM faces WHERE person_id = ?", (person.id,))
            self._x("DELETE FROM persons WHERE id = ?", (person.id,))
            self._touch(person.collection_id)
        return ids

    def merge_persons(self, into: int, others: Sequence[int]) -> list[int]:
        """Move every face of ``others`` to ``into`` and delete ``others`` (same collection only).

        Returns:
            Ids of the faces moved.
        """
        with self.transaction():
            target = self.person(into)
            moved: list[int] = []
            for other_id in others:
                other = self.person(other_id)
                if other.collection_id != target.collection_id:
                    raise GalleryError(f"person {other.id} is in another collection than person {target.id}")
                if other.id == target.id:
                    continue
                moved += [int(r[0]) for r in self._all("SELECT id FROM faces WHERE person_id = ?", (other.id,))]
                self._x(
                    "UPDATE faces SET person_id = ?, assigned_by = COALESCE(assigned_by, 'user') WHERE person_id = ?",
                    (target.id, other.id),
                )
                self._x("DELETE FROM persons WHERE id = ?", (other.id,))
            self._x("UPDATE persons SET updated_at = ? WHERE id = ?", (time.time(), target.id))
            self._touch(target.collection_id)
        return sorted(moved)

    # -- faces ----------------------------------------------------------------------------------
    def _face_row(self, cid: int, face: NewFace, dim: int, image_id: int | None, now: float) -> tuple[Any, ...]:
        if face.source not in FACE_SOURCES:
            raise ConfigError(f"face source must be one of {FACE_SOURCES}, got {face.source!r}")
        if face.assigned_by is not None and face.assigned_by not in ASSIGNERS:
            raise ConfigError(f"assigned_by must be one of {ASSIGNERS} or None, got {face.assigned_by!r}")
        vec = unit_embeddings(face.embedding, dim)[0]
        return (
            cid,
            None if face.person_id is None else int(face.person_id),
            image_id,
            face.source,
            face.assigned_by if face.person_id is not None else None,
            _blob_f32(face.bbox, 4),
            _blob_f32(face.kps, 10),
            None if face.det_score is None else float(face.det_score),
            None if face.quality is None else float(face.quality),
            json.dumps(face.quality_detail or {}, separators=(",", ":"), allow_nan=False),
            face.source_sha256,
            None if face.source_path is None else path_bytes(face.source_path),
            face.crop,
            now,
            self._encode_vector(vec),
        )

    def add_faces(self, collection_id: int, faces: Sequence[NewFace], *, image_ids: Sequence[int] = ()) -> list[int]:
        """Store faces (their embeddings are checked against the collection's dimension and normalised).

        Args:
            collection_id: the collection; its contract must be set.
            faces: the faces; a face's ``image_key`` indexes ``image_ids``.
            image_ids: image ids the faces' ``image_key`` refer to.

        Returns:
            The new face ids, in order.

        Raises:
            GalleryError: the collection has no contract yet, or a person is in another collection.
        """
        if not faces:
            return []
        with self.transaction():
            coll = self.collection(collection_id)
            if coll.contract is None:
                raise GalleryError(f"collection {coll.name!r} has no embedding contract yet; set it first")
            persons = {int(f.person_id) for f in faces if f.person_id is not None}
            for pid in persons:
                if self.person(pid).collection_id != coll.id:
                    raise GalleryError(f"person {pid} is not in collection {coll.name!r}")
            now = time.time()
            rows = [
                self._face_row(
                    coll.id, f, coll.contract.dim, None if f.image_key is None else image_ids[f.image_key], now
                )
                for f in faces
            ]
            ids = self._insert_faces(rows)
            self._touch(coll.id)
        return ids

    def _face(self, row: Any, embedding: np.ndarray | None = None) -> FaceRecord:
        fid, cid, pid, iid, source, by, bbox, kps, det, qual, detail, sha, path, crop, created = row
        return FaceRecord(
            int(fid), int(cid), None if pid is None else int(pid), None if iid is None else int(iid), source, by,
            _f32(bbox, (4,)), _f32(kps, (5, 2)), det, qual, json.loads(detail) if detail else {}, sha, _path_of(path),
            bool(crop), embedding, float(created),
        )  # fmt: skip

    def _faces_where(self, where: str, params: Sequence[Any], with_embeddings: bool) -> list[FaceRecord]:
        cols = _FACE_COLUMNS + (", f.embedding" if with_embeddings else "")
        sql = f"SELECT {cols} FROM faces f LEFT JOIN images i ON i.id = f.image_id WHERE {where} ORDER BY f.id"
        rows = self._all(sql, params)
        if not with_embeddings:
            return [self._face(r) for r in rows]
        if not rows:
            return []
        dims = {int(r[1]): self.collection(int(r[1])).contract.dim for r in rows}  # type: ignore[union-attr]
        out = []
        for r in rows:
            vec = self._decode_vectors([r[-1]], dims[int(r[1])])[0]
            out.append(self._face(r[:-1], vec))
        return out

    def face(self, face_id: int, *, with_embedding: bool = False) -> FaceRecord:
        """The face with this id.

        Raises:
            GalleryError: no such face.
        """
        found = self._faces_where("f.id = ?", (int(face_id),), with_embedding)
        if not found:
            raise GalleryNotFoundError(f"{self.url}: no face with id {face_id}")
        return found[0]

    def faces(
        self,
        *,
        person_id: int | None = None,
        image_id: int | None = None,
        face_ids: Sequence[int] | None = None,
        with_embeddings: bool = False,
    ) -> list[FaceRecord]:
        """Faces of a person, of an image, or with the given ids (by id)."""
        if person_id is not None:
            return self._faces_where("f.person_id = ?", (int(person_id),), with_embeddings)
        if image_id is not None:
            return self._faces_where("f.image_id = ?", (int(image_id),), with_embeddings)
        if face_ids is not None:
            out: list[FaceRecord] = []
            ids = [int(i) for i in face_ids]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                out += self._faces_where(f"f.id IN ({','.join('?' * len(chunk))})", chunk, with_embeddings)
            return sorted(out, key=lambda f: f.id)
        raise ConfigError("faces(): give person_id, image_id or face_ids")

    def face_crop(self, face_id: int) -> bytes | None:
        """The stored JPEG crop of a face, or ``None``."""
        row = self._one("SELECT crop FROM faces WHERE id = ?", (int(face_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no face with id {face_id}")
        return None if row[0] is None else bytes(row[0])

    def delete_faces(self, face_ids: Sequence[int]) -> list[int]:
        """Delete faces by id; returns the ids that existed."""
        ids = sorted({int(i) for i in face_ids})
        gone: list[int] = []
        with self.transaction():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for cid, fid in self._all(f"SELECT collection_id, id FROM faces WHERE id IN ({marks})", chunk):
                    self._touch(cid)
                    gone.append(int(fid))
                self._x(f"DELETE FROM faces WHERE id IN ({marks})", chunk)
        return sorted(gone)

    def assign_faces(
        self,
        collection_id: int,
        face_ids: Sequence[int],
        person_ids: Sequence[int | None],
        *,
        assigned_by: str = "user",
    ) -> int:
        """Attach faces to persons (``None`` or ``-1`` detaches) in one transaction.

        Raises:
            GalleryError: a face or person is not in the collection.

        Returns:
            Number of faces changed.
        """
        if assigned_by not in ASSIGNERS:
            raise ConfigError(f"assigned_by must be one of {ASSIGNERS}, got {assigned_by!r}")
        if len(face_ids) != len(person_ids):
            raise ConfigError(f"assign_faces: {len(face_ids)} face ids but {len(person_ids)} person ids")
        cid = int(collection_id)
        pairs = [(int(f), None if p is None or int(p) < 0 else int(p)) for f, p in zip(face_ids, person_ids)]
        with self.transaction():
            self.collection(cid)
            wanted = {p for _, p in pairs if p is not None}
            known = self._ids_in(cid, "persons", wanted)
            if wanted - known:
                raise GalleryError(f"persons {sorted(wanted - known)[:10]} are not in collection {cid}")
            faces = {f for f, _ in pairs}
            have = self._ids_in(cid, "faces", faces)
            if faces - have:
                raise GalleryError(f"faces {sorted(faces - have)[:10]} are not in collection {cid}")
            self._executemany(
                "UPDATE faces SET person_id = ?, assigned_by = ? WHERE id = ?",
                [(p, None if p is None else assigned_by, f) for f, p in pairs],
            )
            self._touch(cid)
        return len(pairs)

    def _ids_in(self, cid: int, table: str, ids: set[int]) -> set[int]:
        found: set[int] = set()
        items = sorted(ids)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            rows = self._all(
                f"SELECT id FROM {table} WHERE collection_id = ? AND id IN ({','.join('?' * len(chunk))})",
                [cid, *chunk],
            )
            found.update(int(r[0]) for r in rows)
        return found

    def face_arrays(self, collection_id: int, *, with_embeddings: bool = True) -> tuple[FaceArrays, int]:
        """Every face of a collection as arrays, and the revision they show (one consistent read).

        Returns:
            ``(arrays, revision)``; embeddings are ``(0, D)`` when ``with_embeddings`` is false.
        """
        cid = int(collection_id)
        with self.snapshot():
            coll = self.collection(cid)
            dim = coll.contract.dim if coll.contract is not None else 0
            cols = "id, image_id, person_id, assigned_by" + (", embedding" if with_embeddings else "")
            cursor = self._x(f"SELECT {cols} FROM faces WHERE collection_id = ? ORDER BY id", (cid,))
            ids, images, persons, by, vecs = [], [], [], [], []
            while True:
                rows = cursor.fetchmany(_FETCH)
                if not rows:
                    break
                ids += [r[0] for r in rows]
                images += [-1 if r[1] is None else r[1] for r in rows]
                persons += [-1 if r[2] is None else r[2] for r in rows]
                by += [r[3] for r in rows]
                if with_embeddings:
                    vecs.append(self._decode_vectors([r[4] for r in rows], dim))
        n = len(ids)
        emb = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        arrays = FaceArrays(
            np.asarray(ids, np.int64).reshape(n), emb if with_embeddings else np.zeros((0, dim), np.float32),
            np.asarray(images, np.int64).reshape(n), np.asarray(persons, np.int64).reshape(n),
            np.asarray(by, dtype=object).reshape(n),
        )  # fmt: skip
        return arrays, coll.revision

    # -- face links (clustering constraints) ----------------------------------------------------
    def add_links(self, collection_id: int, pairs: Sequence[tuple[int, int]], kind: str) -> int:
        """Record ``must_link`` / ``cannot_link`` constraints between faces (duplicates ignored)."""
        if kind not in LINK_KINDS:
            raise ConfigError(f"link kind must be one of {LINK_KINDS}, got {kind!r}")
        rows = sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in pairs if int(a) != int(b)})
        cid = int(collection_id)
        with self.transaction():
            have = self._ids_in(cid, "faces", {x for pair in rows for x in pair})
            missing = {x for pair in rows for x in pair} - have
            if missing:
                raise GalleryError(f"faces {sorted(missing)[:10]} are not in collection {cid}")
            now = time.time()
            self._executemany(
                "INSERT INTO face_links (collection_id, face_a, face_b, kind, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(cid, a, b, kind, now) for a, b in rows],
            )
            self._touch(cid)
        return len(rows)

    def links(self, collection_id: int, kind: str | None = None) -> list[tuple[int, int, str]]:
        """``(face_a, face_b, kind)`` constraints of a collection (``face_a < face_b``)."""
        sql = "SELECT face_a, face_b, kind FROM face_links WHERE collection_id = ?"
        params: list[Any] = [int(collection_id)]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return [(int(a), int(b), k) for a, b, k in self._all(sql + " ORDER BY face_a, face_b", params)]

    # -- images ---------------------------------------------------------------------------------
    def _image(self, row: Any) -> ImageRecord:
        iid, cid, path, sha, size, mtime, w, h, status, error, count, at = row
        return ImageRecord(int(iid), int(cid), _path_of(path), sha, size, mtime, w, h, status, error, int(count), at)

    def images(
        self, collection_id: int, *, paths: Sequence[str | os.PathLike] | None = None, status: str | None = None
    ) -> list[ImageRecord]:
        """Indexed images of a collection (all, or those at ``paths``, or with ``status``), by id."""
        cid = int(collection_id)
        if paths is None:
            sql, params = f"SELECT {_IMAGE_COLUMNS} FROM images WHERE collection_id = ?", [cid]
            if status is not None:
                sql += " AND status = ?"
                params.append(status)
            return [self._image(r) for r in self._all(sql + " ORDER BY id", params)]
        keys = [path_bytes(p) for p in paths]
        out: list[ImageRecord] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_IMAGE_COLUMNS} FROM images WHERE collection_id = ? AND path IN ({marks})"
            out += [self._image(r) for r in self._all(sql, [cid, *chunk])]
        return sorted(out, key=lambda r: r.id)

    def image(self, image_id: int) -> ImageRecord:
        """The image with this id."""
        row = self._one(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (int(image_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no image with id {image_id}")
        return self._image(row)

    def write_images(self, collection_id: int, writes: Sequence[ImageWrite]) -> tuple[list[int], list[int]]:
        """Record indexed photos with their faces (replacing what an earlier run stored for them).

        Returns:
            ``(new face ids, removed face ids)``.
        """
        cid = int(collection_id)
        added: list[int] = []
        removed: list[int] = []
        with self.transaction():
            image_ids: list[int] = []
            faces: list[NewFace] = []
            now = time.time()
            for key, write in enumerate(writes):
                status = "error" if write.error is not None else "done"
                pb = path_bytes(write.path)
                row = self._x("SELECT id FROM images WHERE collection_id = ? AND path = ?", (cid, pb)).fetchone()
                values = (write.sha256, write.size, write.mtime_ns, write.width, write.height, status, write.error,
                          len(write.faces), now)  # fmt: skip
                if row is None:
                    iid = int(
                        self._x(
                            "INSERT INTO images (collection_id, path, sha256, size, mtime_ns, width, height, status, "
                            "error, face_count, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                            (cid, pb, *values),
                        ).fetchone()[0]
                    )
                else:
                    iid = int(row[0])
                    removed += [int(r[0]) for r in self._all("SELECT id FROM faces WHERE image_id = ?", (iid,))]
                    self._x("DELETE FROM faces WHERE image_id = ?", (iid,))
                    self._x(
                        "UPDATE images SET sha256 = ?, size = ?, mtime_ns = ?, width = ?, height = ?, status = ?, "
                        "error = ?, face_count = ?, indexed_at = ? WHERE id = ?",
                        (*values, iid),
                    )
                image_ids.append(iid)
                for face in write.faces:
                    face.image_key = key
                    faces.append(face)
            if faces:
                added = self.add_faces(cid, faces, image_ids=image_ids)
            self._touch(cid)
        return added, removed

    def touch_image(self, image_id: int, size: int, mtime_ns: int) -> None:
        """Record a new ``stat`` for an image whose content hash did not change."""
        with self.transaction():
            image = self.image(image_id)
            self._x("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?", (int(size), int(mtime_ns), image.id))
            self._touch(image.collection_id)

    def delete_images(self, image_ids: Sequence[int]) -> list[int]:
        """Forget images and their faces; returns the removed face ids."""
        ids = sorted({int(i) for i in image_ids})
        removed: list[int] = []
        with self.transaction():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for cid, fid in self._all(f"SELECT collection_id, id FROM faces WHERE image_id IN ({marks})", chunk):
                    removed.append(int(fid))
                    self._touch(cid)
                for (cid,) in self._all(f"SELECT DISTINCT collection_id FROM images WHERE id IN ({marks})", chunk):
                    self._touch(cid)
                self._x(f"DELETE FROM faces WHERE image_id IN ({marks})", chunk)
                self._x(f"DELETE FROM images WHERE id IN ({marks})", chunk)
        return sorted(removed)

    def iter_faces(
        self, collection_id: int, *, with_embeddings: bool = True, with_crops: bool = False, batch: int = 4096
    ) -> Iterator[list[tuple[FaceRecord, bytes | None]]]:
        """Every face of a collection in id order, ``batch`` at a time, with its crop bytes when asked.

        Yields:
            Lists of ``(FaceRecord, crop or None)``.
        """
        cid = int(collection_id)
        coll = self.collection(cid)
        dim = coll.contract.dim if coll.contract is not None else 0
        cols = _FACE_COLUMNS + (", f.crop" if with_crops else ", NULL") + (", f.embedding" if with_embeddings else "")
        last = 0
        while True:
            rows = self._all(
                f"SELECT {cols} FROM faces f LEFT JOIN images i ON i.id = f.image_id "
                f"WHERE f.collection_id = ? AND f.id > ? ORDER BY f.id LIMIT {int(batch)}",
                (cid, last),
            )
            if not rows:
                return
            n = _FACE_WIDTH
            vecs = self._decode_vectors([r[n + 1] for r in rows], dim) if with_embeddings else None
            out = []
            for i, r in enumerate(rows):
                crop = None if r[n] is None else bytes(r[n])
                out.append((self._face(r[:n], None if vecs is None else vecs[i]), crop))
            last = int(rows[-1][0])
            yield out
