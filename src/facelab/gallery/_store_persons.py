"""The SQL for persons and face links, shared by every gallery backend.

:class:`PersonsSQL` is a mixin of :class:`facelab.gallery.store.GalleryStore` (see
:mod:`facelab.gallery._store_records` for faces and images, and the conventions both follow).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from facelab.errors import ConfigError, GalleryError, GalleryNotFoundError
from facelab.gallery._store_records import in_chunks
from facelab.gallery.records import LINK_KINDS, PERSON_KINDS, Person, check_text, metadata_json

__all__ = ["PersonsSQL"]

_PERSON_COLUMNS = (
    "p.id, p.collection_id, p.name, p.external_id, p.kind, p.metadata, p.created_at, p.updated_at, "
    "(SELECT COUNT(*) FROM faces f WHERE f.person_id = p.id)"
)


class PersonsSQL:
    """Persons and face links (a mixin of :class:`~facelab.gallery.store.GalleryStore`)."""

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
                self._check_external_id(int(collection_id), ext)
                row = self._x(
                    "INSERT INTO persons (collection_id, name, external_id, kind, metadata, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (int(collection_id), name, ext, kind, metadata_json(meta), now, now),
                ).fetchone()
                ids.append(int(row[0]))
            self._touch(collection_id)
        return ids

    def _check_external_id(self, cid: int, external_id: str | None, owner: int | None = None) -> None:
        """Raise :class:`GalleryError` when another person than ``owner`` of the collection has ``external_id``."""
        if external_id is None:
            return
        other = self._one(
            "SELECT id FROM persons WHERE collection_id = ? AND external_id = ? AND id <> ?",
            (cid, external_id, -1 if owner is None else int(owner)),
        )
        if other is not None:
            raise GalleryError(f"external id {external_id!r} is already used by person {other[0]}")

    def person(self, person_id: int) -> Person:
        """The person with this id.

        Raises:
            GalleryError: no such person.
        """
        row = self._one(f"SELECT {_PERSON_COLUMNS} FROM persons p WHERE p.id = ?", (int(person_id),))
        if row is None:
            raise GalleryNotFoundError(f"{self.url}: no person with id {person_id}")
        return self._person(row)

    def person_names(self, person_ids: Iterable[int]) -> dict[int, tuple[str | None, str | None]]:
        """``person id -> (name, external_id)`` for these persons, read in one query per 500 ids.

        Raises:
            GalleryError: an id names no person.
        """
        wanted = sorted({int(i) for i in person_ids})
        found: dict[int, tuple[str | None, str | None]] = {}
        for chunk, marks in in_chunks(wanted):
            for pid, name, ext in self._all(f"SELECT id, name, external_id FROM persons WHERE id IN ({marks})", chunk):
                found[int(pid)] = (name, ext)
        missing = [pid for pid in wanted if pid not in found]
        if missing:
            raise GalleryNotFoundError(f"{self.url}: no person with id {missing[0]}")
        return found

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
                self._check_external_id(person.collection_id, external_id, person.id)
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
                raise GalleryNotFoundError(f"faces {sorted(missing)[:10]} are not in collection {cid}")
            now = time.time()
            self._xm(
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
