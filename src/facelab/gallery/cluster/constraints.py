"""The user's corrections, kept as constraints that every later clustering run obeys.

Two layers, both plain data a store can persist:

* :class:`Correction` — what the user did, in order: ``merge`` two people, ``split`` faces off a
  person into a new one, ``move`` faces to a person, ``reject`` faces from a person ("not this
  person"). :func:`apply_corrections` applies them to the current assignment at once (the user sees
  the effect) and records their lasting meaning in a :class:`ConstraintSet`.
* :class:`ConstraintSet` — the lasting meaning, as rows of one table (:class:`Constraint`):

  ========  =====================  ==========================================================
  kind      ``face``, ``target``   meaning
  ========  =====================  ==========================================================
  ``pin``   face, person key       the face belongs to that person in every run (must-link of
                                   all faces pinned to one person)
  ``reject`` face, person key      the face never belongs to that person (cannot-link
                                   face ↔ person)
  ``apart`` face, other face id    the two faces are never one person (cannot-link)
  ``join``  face, other face id    the two faces are always one person (must-link, without
                                   naming which)
  ========  =====================  ==========================================================

  A merge pins the faces of both people to the kept one; a split pins both sides (so they stay
  two people); a move pins the faces and the destination's current faces to it (the user saw
  that person) and rejects the faces' old person; a reject unassigns the faces and pins the
  person's other faces (seen, and confirmed, by the same look). A later
  correction wins over an earlier one: pinning a face removes its reject of that person,
  rejecting removes the pin. Rows that name a deleted face are dropped with
  :meth:`ConstraintSet.drop_faces`; a person merged away is renamed in every row.

Faces of one photo are never one person: that cannot-link is derived from the image ids on every
run (never stored), and only a user's explicit pin overrides it (a mirror, a photo of a photo).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "CONSTRAINT_KINDS",
    "CORRECTION_KINDS",
    "Constraint",
    "Correction",
    "ConstraintSet",
    "FaceSet",
    "apply_corrections",
]

#: Row kinds of the constraint table.
CONSTRAINT_KINDS = ("pin", "reject", "apart", "join")
#: Kinds of user corrections.
CORRECTION_KINDS = ("merge", "split", "move", "reject")


@dataclass(frozen=True, order=True)
class Constraint:
    """One row of the constraint table (see the module docstring).

    Attributes:
        kind: ``"pin"``, ``"reject"``, ``"apart"`` or ``"join"``.
        face: face id.
        target: person key (``pin``, ``reject``) or the other face id (``apart``, ``join``).
    """

    kind: str
    face: int
    target: int

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ConfigError(f"unknown constraint kind {self.kind!r}; known: {list(CONSTRAINT_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dictionary."""
        return {"kind": self.kind, "face": int(self.face), "target": int(self.target)}


@dataclass(frozen=True)
class Correction:
    """One user correction.

    Attributes:
        kind: ``"merge"``, ``"split"``, ``"move"`` or ``"reject"``.
        person: ``merge``: the person kept; ``split``: the person split; ``move``: the destination;
            ``reject``: the person the faces are not.
        faces: ``split``: the faces that leave for the new person; ``move`` / ``reject``: the faces.
        other: ``merge``: the person merged away (its key is retired); ``split``: the key of the
            new person (allocated by the caller, e.g. the store).
    """

    kind: str
    person: int
    faces: tuple[int, ...] = ()
    other: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CORRECTION_KINDS:
            raise ConfigError(f"unknown correction {self.kind!r}; known: {list(CORRECTION_KINDS)}")
        object.__setattr__(self, "faces", tuple(int(f) for f in self.faces))
        if self.kind in ("merge", "split") and self.other is None:
            raise ConfigError(f"a {self.kind} correction needs 'other' (the second person's key)")
        if self.kind in ("split", "move", "reject") and not self.faces:
            raise ConfigError(f"a {self.kind} correction needs at least one face")
        if self.other is not None and int(self.other) == int(self.person):
            raise ConfigError(f"{self.kind}: person and other are the same person {self.person}")

    def to_dict(self) -> dict[str, Any]:
        """The correction as a JSON-ready dictionary."""
        return {"kind": self.kind, "person": int(self.person), "faces": list(self.faces), "other": self.other}


@dataclass
class ConstraintSet:
    """Pins, rejects and apart pairs (see the module docstring).

    Attributes:
        pins: face id → person key.
        rejects: face id → person keys the face is not.
        apart: pairs ``(a, b)``, ``a < b``, of face ids that are different people.
        together: pairs ``(a, b)``, ``a < b``, of face ids that are one person.
    """

    pins: dict[int, int] = field(default_factory=dict)
    rejects: dict[int, set[int]] = field(default_factory=dict)
    apart: set[tuple[int, int]] = field(default_factory=set)
    together: set[tuple[int, int]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.pins) + sum(len(v) for v in self.rejects.values()) + len(self.apart) + len(self.together)

    def copy(self) -> ConstraintSet:
        """A deep copy."""
        return copy.deepcopy(self)

    def pin(self, face: int, person: int) -> None:
        """Pin ``face`` to ``person`` (and forget a reject of that person)."""
        face, person = int(face), int(person)
        self.pins[face] = person
        rejected = self.rejects.get(face)
        if rejected is not None:
            rejected.discard(person)
            if not rejected:
                del self.rejects[face]

    def reject(self, face: int, person: int) -> None:
        """Record that ``face`` is not ``person`` (and drop a pin to it)."""
        face, person = int(face), int(person)
        if self.pins.get(face) == person:
            del self.pins[face]
        self.rejects.setdefault(face, set()).add(person)

    def separate(self, a: int, b: int) -> None:
        """Record that faces ``a`` and ``b`` are different people."""
        a, b = int(a), int(b)
        if a == b:
            raise ConfigError(f"a face cannot be apart from itself ({a})")
        self.together.discard((min(a, b), max(a, b)))
        self.apart.add((min(a, b), max(a, b)))

    def join(self, a: int, b: int) -> None:
        """Record that faces ``a`` and ``b`` are one person (forgets an apart pair of them)."""
        a, b = int(a), int(b)
        if a == b:
            return
        pair = (min(a, b), max(a, b))
        self.apart.discard(pair)
        self.together.add(pair)

    def rename_person(self, old: int, new: int) -> None:
        """Point every pin and reject of person ``old`` at ``new`` (after a merge)."""
        old, new = int(old), int(new)
        for face, person in self.pins.items():
            if person == old:
                self.pins[face] = new
        for rejected in self.rejects.values():
            if old in rejected:
                rejected.discard(old)
                rejected.add(new)

    def drop_faces(self, face_ids: Iterable[int]) -> int:
        """Forget every row that names one of ``face_ids`` (deleted faces); returns rows dropped."""
        gone = {int(f) for f in face_ids}
        before = len(self)
        for f in gone:
            self.pins.pop(f, None)
            self.rejects.pop(f, None)
        self.apart = {p for p in self.apart if p[0] not in gone and p[1] not in gone}
        self.together = {p for p in self.together if p[0] not in gone and p[1] not in gone}
        return before - len(self)

    def rows(self) -> list[Constraint]:
        """All constraints as table rows, sorted."""
        out = [Constraint("pin", f, p) for f, p in self.pins.items()]
        out += [Constraint("reject", f, p) for f, ps in self.rejects.items() for p in ps]
        out += [Constraint("apart", a, b) for a, b in self.apart]
        out += [Constraint("join", a, b) for a, b in self.together]
        return sorted(out)

    @classmethod
    def from_rows(cls, rows: Iterable[Constraint | dict[str, Any] | Sequence[Any]]) -> ConstraintSet:
        """Rebuild from table rows (:class:`Constraint`, dicts or ``(kind, face, target)`` tuples)."""
        out = cls()
        for row in rows:
            if isinstance(row, dict):
                row = Constraint(str(row["kind"]), int(row["face"]), int(row["target"]))
            elif not isinstance(row, Constraint):
                kind, face, target = row
                row = Constraint(str(kind), int(face), int(target))
            if row.kind == "pin":
                out.pin(row.face, row.target)
            elif row.kind == "reject":
                out.rejects.setdefault(int(row.face), set()).add(int(row.target))
            elif row.kind == "join":
                out.join(row.face, row.target)
            else:
                out.separate(row.face, row.target)
        return out


@dataclass
class FaceSet:
    """The faces a clustering run sees, as plain arrays.

    Attributes:
        face_ids: ``(N,)`` int64 unique face ids (the store's keys).
        embeddings: ``(N, D)`` float32 embeddings (L2-normalised on construction).
        image_ids: ``(N,)`` photo of each face (any comparable values; faces of one photo are
            never one person).
        persons: ``(N,)`` int64 current person key of each face, ``-1`` for none.
        named: person keys that carry a user-given name (never dissolved).
    """

    face_ids: np.ndarray
    embeddings: np.ndarray
    image_ids: np.ndarray
    persons: np.ndarray | None = None
    named: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        from facelab.gallery.cluster.knn import normalize_rows

        self.face_ids = np.asarray(self.face_ids)
        if self.face_ids.ndim != 1 or (len(self.face_ids) and self.face_ids.dtype.kind not in "iu"):
            raise ConfigError(f"face_ids must be a 1-D integer array, got {self.face_ids.dtype} {self.face_ids.shape}")
        self.face_ids = self.face_ids.astype(np.int64, copy=False)
        n = len(self.face_ids)
        if len(np.unique(self.face_ids)) != n:
            raise ConfigError("face_ids must be unique")
        emb = np.asarray(self.embeddings)
        self.embeddings = normalize_rows(emb) if n else np.zeros((0, emb.shape[-1] if emb.ndim == 2 else 0), np.float32)
        if len(self.embeddings) != n:
            raise ConfigError(f"{n} face ids but {len(self.embeddings)} embeddings")
        self.image_ids = np.asarray(self.image_ids)
        if self.image_ids.shape != (n,):
            raise ConfigError(f"image_ids must have shape ({n},), got {self.image_ids.shape}")
        persons = np.full(n, -1, np.int64) if self.persons is None else np.asarray(self.persons)
        if persons.shape != (n,) or (n and persons.dtype.kind not in "iu"):
            raise ConfigError(f"persons must be ({n},) integers (-1 for none), got {persons.dtype} {persons.shape}")
        self.persons = persons.astype(np.int64, copy=False)
        if (self.persons < -1).any():
            raise ConfigError("person keys must be >= 0 (-1 for none)")
        self.named = frozenset(int(p) for p in self.named)

    def __len__(self) -> int:
        return len(self.face_ids)

    def rows_of(self, face_ids: Iterable[int]) -> np.ndarray:
        """Row numbers of ``face_ids``; :class:`ConfigError` naming an unknown id."""
        ids = np.asarray(list(face_ids), np.int64)
        if len(ids) == 0:
            return np.zeros(0, np.int64)
        if len(self.face_ids) == 0:
            raise ConfigError(f"unknown face id {int(ids[0])}")
        order = np.argsort(self.face_ids, kind="stable")
        pos = np.minimum(np.searchsorted(self.face_ids, ids, sorter=order), len(order) - 1)
        rows = order[pos]
        bad = ids[self.face_ids[rows] != ids]
        if len(bad):
            raise ConfigError(f"unknown face id {int(bad[0])}")
        return rows.astype(np.int64)

    def with_persons(self, persons: np.ndarray, named: Iterable[int] | None = None) -> FaceSet:
        """The same faces with another assignment (arrays are shared, not copied)."""
        out = copy.copy(self)
        out.persons = np.asarray(persons, np.int64)
        if named is not None:
            out.named = frozenset(int(p) for p in named)
        return out

    def subset(self, rows: np.ndarray) -> FaceSet:
        """The faces at ``rows``."""
        rows = np.asarray(rows, np.int64)
        return FaceSet(self.face_ids[rows], self.embeddings[rows], self.image_ids[rows], self.persons[rows], self.named)

    def concat(self, other: FaceSet) -> FaceSet:
        """These faces followed by ``other``'s (ids must not overlap)."""
        if self.embeddings.shape[1] != other.embeddings.shape[1]:
            raise ConfigError(f"embedding sizes differ: {self.embeddings.shape[1]} and {other.embeddings.shape[1]}")
        return FaceSet(
            np.concatenate([self.face_ids, other.face_ids]),
            np.concatenate([self.embeddings, other.embeddings]),
            np.concatenate([self.image_ids, other.image_ids]),
            np.concatenate([self.persons, other.persons]),
            self.named | other.named,
        )

    def person_faces(self, person: int) -> np.ndarray:
        """Face ids currently assigned to ``person``."""
        return self.face_ids[self.persons == int(person)]


def apply_corrections(
    faces: FaceSet, constraints: ConstraintSet | None, corrections: Iterable[Correction]
) -> tuple[FaceSet, ConstraintSet]:
    """Apply user corrections now and record their lasting meaning.

    Args:
        faces: the current faces and assignment.
        constraints: the constraints so far (not modified; ``None`` for none).
        corrections: corrections in the order the user made them.

    Returns:
        ``(faces, constraints)``: the corrected assignment (a new :class:`FaceSet` sharing the
        embeddings) and the updated constraints. A merge also carries the absorbed person's name
        flag over to the kept person.

    Raises:
        ConfigError: a correction names an unknown face, a face that is not the person's, or a
            person without faces (merge, split).
    """
    cons = ConstraintSet() if constraints is None else constraints.copy()
    persons = faces.persons.copy()
    named = set(faces.named)
    for corr in corrections:
        person = int(corr.person)
        if corr.kind == "merge":
            other = int(corr.other)  # type: ignore[arg-type]
            keep_rows = np.flatnonzero(persons == person)
            other_rows = np.flatnonzero(persons == other)
            if len(other_rows) == 0 and len(keep_rows) == 0:
                raise ConfigError(f"merge: neither person {person} nor {other} has faces")
            persons[other_rows] = person
            cons.rename_person(other, person)
            for r in np.r_[keep_rows, other_rows]:
                cons.pin(int(faces.face_ids[r]), person)
            if other in named:
                named.discard(other)
                named.add(person)
        elif corr.kind == "split":
            new = int(corr.other)  # type: ignore[arg-type]
            rows = faces.rows_of(corr.faces)
            wrong = rows[persons[rows] != person]
            if len(wrong):
                raise ConfigError(f"split: face {int(faces.face_ids[wrong[0]])} is not a face of person {person}")
            if np.any(persons == new):
                raise ConfigError(f"split: the new person's key {new} already has faces")
            persons[rows] = new
            for r in rows:
                cons.pin(int(faces.face_ids[r]), new)
            for r in np.flatnonzero(persons == person):
                cons.pin(int(faces.face_ids[r]), person)
        elif corr.kind == "move":
            rows = faces.rows_of(corr.faces)
            for r in np.flatnonzero(persons == person):  # the user looked at the person: confirmed
                cons.pin(int(faces.face_ids[r]), person)
            for r in rows:
                old = int(persons[r])
                if old >= 0 and old != person:
                    cons.reject(int(faces.face_ids[r]), old)
                persons[r] = person
                cons.pin(int(faces.face_ids[r]), person)
        else:  # reject
            rows = faces.rows_of(corr.faces)
            for r in rows:
                if persons[r] == person:
                    persons[r] = -1
                cons.reject(int(faces.face_ids[r]), person)
            for r in np.flatnonzero(persons == person):  # the rest of the person: seen, confirmed
                cons.pin(int(faces.face_ids[r]), person)
    return faces.with_persons(persons, named), cons
