"""The SQL for faces and images, shared by every gallery backend (persons and links: ``_store_persons``).

:class:`RecordsSQL` is a mixin of :class:`facelab.gallery.store.GalleryStore`: it relies on the
store's plumbing (``_x``, ``_xm``, ``_call``, ``_one``, ``_all``, ``transaction``, ``_touch``) and
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
    FaceArrays,
    FaceRecord,
    ImageRecord,
    NewFace,
    unit_embeddings,
)

__all__ = ["RecordsSQL", "ImageWrite", "path_bytes", "in_chunks"]

#: Bytes of embeddings fetched per round trip when reading every face of a collection.
_FETCH_BYTES = 16 << 20


def _rows_per_fetch(dim: int) -> int:
    """Rows per ``fetchmany`` for ``dim``-d embeddings: about :data:`_FETCH_BYTES` of them."""
    return max(1024, min(65536, _FETCH_BYTES // (4 * max(dim, 1))))


#: Most values bound in one ``IN (...)`` list.
_IN_CHUNK = 500


def in_chunks(values: Sequence[Any]) -> Iterator[tuple[list[Any], str]]:
    """``values`` in runs of at most :data:`_IN_CHUNK`, each with its ``?,?,...`` placeholder list."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = list(values[start : start + _IN_CHUNK])
        yield chunk, ",".join("?" * len(chunk))


def _batches(cursor: Any, rows: int) -> Iterator[list[Any]]:
    """``cursor.fetchmany(rows)`` until the result is exhausted."""
    while True:
        batch = cursor.fetchmany(rows)
        if not batch:
            return
        yield batch


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


_FACE_COLUMNS = (
    "f.id, f.collection_id, f.person_id, f.image_id, f.source, f.assigned_by, f.bbox, f.kps, f.det_score, f.quality, "
    "f.quality_detail, f.source_sha256, COALESCE(f.source_path, i.path), f.crop IS NOT NULL, f.created_at"
)
#: Number of columns in :data:`_FACE_COLUMNS`.
_FACE_WIDTH = 15
_IMAGE_COLUMNS = "id, collection_id, path, sha256, size, mtime_ns, width, height, status, error, face_count, indexed_at"


class RecordsSQL:
    """Persons, faces, links and images (a mixin of :class:`~facelab.gallery.store.GalleryStore`)."""

    # -- faces ----------------------------------------------------------------------------------
    def _face_row(self, cid: int, face: NewFace, vec: np.ndarray, image_id: int | None, now: float) -> tuple[Any, ...]:
        if face.source not in FACE_SOURCES:
            raise ConfigError(f"face source must be one of {FACE_SOURCES}, got {face.source!r}")
        if face.assigned_by is not None and face.assigned_by not in ASSIGNERS:
            raise ConfigError(f"assigned_by must be one of {ASSIGNERS} or None, got {face.assigned_by!r}")
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
            strangers = persons - self._ids_in(coll.id, "persons", persons)
            if strangers:
                raise GalleryNotFoundError(f"persons {sorted(strangers)[:10]} are not in collection {coll.name!r}")
            try:
                stacked = np.stack([np.asarray(f.embedding, np.float64).reshape(-1) for f in faces])
            except ValueError as exc:
                raise ConfigError(f"embeddings of different lengths in one call: {exc}") from None
            vecs = unit_embeddings(stacked, coll.contract.dim)  # row by row identical to stored_vectors()
            now = time.time()
            rows = [
                self._face_row(coll.id, f, vec, None if f.image_key is None else image_ids[f.image_key], now)
                for f, vec in zip(faces, vecs)
            ]
            ids = self._call(self._insert_faces, rows)
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
        by_collection: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_collection.setdefault(int(r[1]), []).append(i)
        vecs: list[np.ndarray | None] = [None] * len(rows)
        for cid, at in by_collection.items():  # one decode per collection (its dimension), not one per row
            dim = self.collection(cid).contract.dim  # type: ignore[union-attr]
            for i, vec in zip(at, self._decode_vectors([rows[i][-1] for i in at], dim)):
                vecs[i] = vec
        return [self._face(r[:-1], vec) for r, vec in zip(rows, vecs)]

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
        person_ids: Sequence[int] | None = None,
        with_embeddings: bool = False,
    ) -> list[FaceRecord]:
        """Faces of a person, of an image, with the given ids, or of the given persons (by id)."""
        if person_id is not None:
            return self._faces_where("f.person_id = ?", (int(person_id),), with_embeddings)
        if image_id is not None:
            return self._faces_where("f.image_id = ?", (int(image_id),), with_embeddings)
        for column, ids in (("f.id", face_ids), ("f.person_id", person_ids)):
            if ids is not None:
                out: list[FaceRecord] = []
                for chunk, marks in in_chunks(sorted({int(i) for i in ids})):
                    out += self._faces_where(f"{column} IN ({marks})", chunk, with_embeddings)
                return sorted(out, key=lambda f: f.id)
        raise ConfigError("faces(): give person_id, image_id, face_ids or person_ids")

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
            for chunk, marks in in_chunks(ids):
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
                raise GalleryNotFoundError(f"persons {sorted(wanted - known)[:10]} are not in collection {cid}")
            faces = {f for f, _ in pairs}
            have = self._ids_in(cid, "faces", faces)
            if faces - have:
                raise GalleryNotFoundError(f"faces {sorted(faces - have)[:10]} are not in collection {cid}")
            self._xm(
                "UPDATE faces SET person_id = ?, assigned_by = ? WHERE id = ?",
                [(p, None if p is None else assigned_by, f) for f, p in pairs],
            )
            self._touch(cid)
        return len(pairs)

    def _ids_in(self, cid: int, table: str, ids: set[int]) -> set[int]:
        found: set[int] = set()
        for chunk, marks in in_chunks(sorted(ids)):
            rows = self._all(f"SELECT id FROM {table} WHERE collection_id = ? AND id IN ({marks})", [cid, *chunk])
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
            count = self.face_count(cid)
            emb = np.empty((count if with_embeddings else 0, dim), np.float32)
            ids, images, persons = (np.empty(count, np.int64) for _ in range(3))
            by: list[Any] = []
            cols = "id, COALESCE(image_id, -1), COALESCE(person_id, -1), assigned_by" + (
                ", embedding" if with_embeddings else ""
            )
            cursor = self._x(f"SELECT {cols} FROM faces WHERE collection_id = ? ORDER BY id", (cid,))
            n = 0
            for rows in _batches(cursor, _rows_per_fetch(dim)):
                m, columns = len(rows), list(zip(*rows))
                ids[n : n + m], images[n : n + m], persons[n : n + m] = columns[0], columns[1], columns[2]
                by += columns[3]
                if with_embeddings:
                    emb[n : n + m] = self._decode_vectors(list(columns[4]), dim)
                n += m
        if n != count:  # pragma: no cover - the read transaction makes this impossible
            raise GalleryError(f"{self.url}: collection {cid} changed while it was read")
        return FaceArrays(ids, emb, images, persons, np.asarray(by, dtype=object).reshape(n)), coll.revision

    def vector_chunks(self, collection_id: int, on_chunk: Any, *, chunk: int | None = None) -> tuple[int, int]:
        """Feed every face's ``(ids, embeddings, person_ids)`` to ``on_chunk``, ``chunk`` rows at a time, by id.

        The memory-light way to build a search index: one consistent read, no full copy held.
        ``person_ids`` is ``-1`` for unassigned faces. The default chunk is about 16 MB of
        embeddings: small enough that its buffers are reused (large fresh allocations cost
        page faults), large enough that per-chunk overhead does not count.

        Returns:
            ``(number of faces, revision read)``.
        """
        cid = int(collection_id)
        with self.snapshot():
            coll = self.collection(cid)
            dim = coll.contract.dim if coll.contract is not None else 0
            cursor = self._x(
                "SELECT id, COALESCE(person_id, -1), embedding FROM faces WHERE collection_id = ? ORDER BY id", (cid,)
            )
            n = 0
            for rows in _batches(cursor, chunk or _rows_per_fetch(dim)):
                ids, persons, blobs = zip(*rows)
                on_chunk(np.array(ids, np.int64), self._decode_vectors(list(blobs), dim), np.array(persons, np.int64))
                n += len(rows)
        return n, coll.revision

    def face_count(self, collection_id: int) -> int:
        """Number of faces in a collection."""
        return int(self._one("SELECT COUNT(*) FROM faces WHERE collection_id = ?", (int(collection_id),))[0])

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
        out: list[ImageRecord] = []
        for chunk, marks in in_chunks([path_bytes(p) for p in paths]):
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

    def touch_images(self, collection_id: int, stats: Sequence[tuple[int, int, int]]) -> None:
        """Record new ``stat`` values ``(image id, size, mtime_ns)`` for images whose content hash did not change.

        Raises:
            GalleryError: an image is not in the collection.
        """
        if not stats:
            return
        cid = int(collection_id)
        rows = [(int(size), int(mtime_ns), int(iid)) for iid, size, mtime_ns in stats]
        with self.transaction():
            missing = sorted({r[2] for r in rows} - self._ids_in(cid, "images", {r[2] for r in rows}))
            if missing:
                raise GalleryNotFoundError(f"{self.url}: no image with id {missing[0]} in collection {cid}")
            self._xm("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?", rows)
            self._touch(cid)

    def delete_images(self, image_ids: Sequence[int]) -> list[int]:
        """Forget images and their faces; returns the removed face ids."""
        ids = sorted({int(i) for i in image_ids})
        removed: list[int] = []
        with self.transaction():
            for chunk, marks in in_chunks(ids):
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
