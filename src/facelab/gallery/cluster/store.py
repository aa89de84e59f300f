"""Clustering a gallery: its faces and the user's corrections in, people out.

The store already holds everything the engine needs, so no table is added:

================================  ===========================================================
engine                            gallery
================================  ===========================================================
:class:`FaceSet`                  :meth:`Gallery.face_arrays` (faces without a photo, e.g.
                                  enrolled ones, count as one photo each)
named person                      a person of kind ``"named"``
pin (face → person)               ``faces.assigned_by`` ``"user"`` or ``"enroll"``
face left out of clustering       listed in the collection's metadata ``cluster.ignored`` (the
                                  faces a user kept when deleting their person: that person
                                  never comes back)
faces never clustered             unassigned faces with an id above ``cluster.last_face_id``
                                  (face ids only grow)
apart (face ≠ face)               a ``cannot_link`` face link
reject (face ≠ person)            ``cannot_link`` links from the face to the person's pinned
                                  faces (the person's faces are pinned first: the user saw them)
must-link (face = face)           a ``must_link`` face link (the two faces are kept together)
================================  ===========================================================

:func:`cluster_gallery` runs a full re-cluster (:func:`~facelab.gallery.cluster.engine.recluster`)
or adds the faces never clustered (:func:`~facelab.gallery.cluster.engine.add_faces`) and writes
the result: new people as unnamed ``"cluster"`` persons, changed assignments with ``assigned_by
= "cluster"``, and unnamed persons left without faces deleted. :func:`correct_gallery` applies
:class:`Correction` s to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery.cluster.constraints import ConstraintSet, Correction, FaceSet, apply_corrections
from facelab.gallery.cluster.engine import ClusterResult, add_faces, recluster

__all__ = [
    "PINNING_ASSIGNERS",
    "GalleryClustering",
    "load_gallery",
    "pack_threshold",
    "cluster_gallery",
    "correct_gallery",
]

_logger = logging.getLogger(__name__)

#: ``assigned_by`` values that pin a face to its person.
PINNING_ASSIGNERS = ("user", "enroll")
#: Key of the clustering state in a collection's metadata.
_STATE = "cluster"


def _state(gallery: Any, collection: str) -> dict[str, Any]:
    return dict(gallery.collection(collection).metadata.get(_STATE) or {})


def _save_state(gallery: Any, collection: str, **changes: Any) -> None:
    coll = gallery.collection(collection)
    metadata = dict(coll.metadata)
    metadata[_STATE] = {**dict(metadata.get(_STATE) or {}), **changes}
    gallery.store.update_collection(coll.id, metadata=metadata)


def ignore_faces(gallery: Any, collection: str, face_ids: Iterable[int]) -> int:
    """Leave faces out of every later clustering run (e.g. the faces kept from a deleted person).

    Returns:
        How many faces are ignored now.
    """
    ignored = set(_state(gallery, collection).get("ignored", [])) | {int(f) for f in face_ids}
    _save_state(gallery, collection, ignored=sorted(ignored))
    return len(ignored)


@dataclass
class GalleryClustering:
    """What :func:`cluster_gallery` did.

    Attributes:
        result: the engine's result.
        mode: ``"full"`` or ``"incremental"``.
        new_persons: ids of the persons created.
        reassigned: faces whose person changed.
        deleted_persons: unnamed persons removed because they have no face left.
    """

    result: ClusterResult
    mode: str
    new_persons: list[int] = field(default_factory=list)
    reassigned: int = 0
    deleted_persons: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        r = self.result
        return {
            "mode": self.mode,
            "faces": len(r.face_ids),
            "assigned": int(np.count_nonzero((r.persons >= 0) | (r.new_clusters >= 0))),
            "new_persons": self.new_persons,
            "reassigned_faces": self.reassigned,
            "deleted_persons": self.deleted_persons,
            "merged": {str(k): v for k, v in r.merged.items()},
            "info": {k: v for k, v in r.info.items() if k != "knn"} | {"knn": r.info.get("knn")},
        }


def pack_threshold(gallery: Any, collection: str) -> float:
    """The collection's same-person cosine threshold, else that of the recogniser that made its embeddings.

    Raises:
        ConfigError: the collection has no embedding contract, or its card documents no threshold.
    """
    coll = gallery.collection(collection)
    if getattr(coll, "threshold", None) is not None:
        return float(coll.threshold)  # the collection's own "same person" threshold wins
    contract = coll.contract
    if contract is None:
        raise ConfigError(f"collection {collection!r} has no faces yet (no embedding model recorded)")
    from facelab.recognition.compare import resolve_threshold
    from facelab.zoo import get_card

    try:
        value = resolve_threshold(None, get_card(contract.model))
    except Exception:  # noqa: BLE001 - an unregistered local card: fall through to the known packs
        value = None
    if value is None and contract.model.startswith("dlib_"):
        from facelab.dlib.pack import THRESHOLD_COSINE

        value = THRESHOLD_COSINE
    if value is None:
        raise ConfigError(
            f"no same-person threshold known for {contract.model}: pass --threshold (see 'facelab eval calibrate')"
        )
    return float(value)


def load_gallery(gallery: Any, collection: str) -> tuple[FaceSet, ConstraintSet, np.ndarray]:
    """A collection's faces as a :class:`FaceSet`, its constraints, and which faces were never clustered.

    Returns:
        ``(faces, constraints, fresh)``; ``fresh`` is ``(N,)`` bool: unassigned faces indexed
        since the last clustering run. Ignored faces are left out.
    """
    arrays = gallery.face_arrays(collection)
    state = _state(gallery, collection)
    by = np.asarray(arrays.assigned_by, dtype=object)
    persons = arrays.person_ids.astype(np.int64)
    keep = ~np.isin(arrays.ids, np.asarray(state.get("ignored", []), np.int64))
    ids = arrays.ids.astype(np.int64)[keep]
    image = arrays.image_ids.astype(np.int64)[keep].copy()
    lone = image < 0
    image[lone] = -1 - ids[lone]  # a face without a photo is a photo of its own
    persons, by = persons[keep], by[keep]
    named = {p.id for p in gallery.persons(collection, kind="named")}
    dim = arrays.embeddings.shape[1] if arrays.embeddings.ndim == 2 else 0
    emb = arrays.embeddings[keep] if len(ids) else np.zeros((0, dim), np.float32)
    faces = FaceSet(ids, emb, image, persons, frozenset(named))
    cons = ConstraintSet()
    for f, p, a in zip(ids.tolist(), persons.tolist(), by.tolist()):
        if p >= 0 and a in PINNING_ASSIGNERS:
            cons.pin(f, p)
    present = set(ids.tolist())
    for a, b, kind in gallery.links(collection):
        if a not in present or b not in present:
            continue
        if kind == "cannot_link":
            cons.separate(a, b)
        else:
            cons.join(a, b)
    fresh = (persons < 0) & (ids > int(state.get("last_face_id", -1)))
    return faces, cons, fresh


def cluster_gallery(
    gallery: Any,
    collection: str = "default",
    *,
    algorithm: str = "default",
    threshold: float | None = None,
    params: dict[str, Any] | None = None,
    full: bool = False,
    backend: str = "auto",
) -> GalleryClustering:
    """Cluster a collection's faces into people and store the result.

    Args:
        gallery: an open :class:`~facelab.gallery.Gallery`.
        collection: the collection.
        algorithm: a clustering algorithm name (see :func:`~facelab.gallery.cluster.make_clusterer`).
        threshold: same-person cosine threshold (default: the collection's recogniser's).
        params: algorithm parameter overrides.
        full: re-cluster every face (named people, pins and links are kept); default: only the
            faces never clustered join people or found new ones (a first run is always full).
        backend: kNN backend of a full run.

    Returns:
        A :class:`GalleryClustering`.
    """
    tau = pack_threshold(gallery, collection) if threshold is None else float(threshold)
    faces, cons, fresh = load_gallery(gallery, collection)
    if len(faces) == 0:
        raise ConfigError(f"collection {collection!r} has no faces: index photos first ('facelab index')")
    mode = "full" if full or not (faces.persons >= 0).any() else "incremental"
    if mode == "full":
        result = recluster(faces, cons, algorithm=algorithm, threshold=tau, params=params, backend=backend)
    else:
        result = add_faces(faces, fresh, cons, algorithm=algorithm, threshold=tau, params=params)
    out = GalleryClustering(result, mode)
    # existing persons: write the faces whose person changed (pinned faces never change)
    changed = (result.new_clusters < 0) & (result.persons != faces.persons)
    if mode == "incremental":
        changed &= fresh | (faces.persons < 0)
    if changed.any():
        gallery.assign_faces(
            result.face_ids[changed].tolist(),
            [None if p < 0 else int(p) for p in result.persons[changed].tolist()],
            collection=collection,
            assigned_by="cluster",
        )
    out.reassigned = int(changed.sum())
    new = result.new_clusters >= 0
    if new.any():
        mapping = gallery.apply_clusters(
            result.face_ids[new].tolist(), result.new_clusters[new].tolist(), collection=collection
        )
        out.new_persons = sorted(int(v) for v in mapping.values())
    if mode == "full":
        for person in gallery.persons(collection):
            if person.kind == "cluster" and person.face_count == 0:
                gallery.delete_person(person.id)
                out.deleted_persons.append(int(person.id))
    _save_state(gallery, collection, last_face_id=int(faces.face_ids.max()), algorithm=result.info["params"])
    return out


def correct_gallery(gallery: Any, collection: str, corrections: Iterable[Correction]) -> None:
    """Apply user corrections to the store so that every later clustering run keeps them.

    Faces the corrections pin are written with ``assigned_by = "user"``; faces a reject takes
    off a person are detached (``"cluster"``: a later run may place them elsewhere) and linked
    by ``cannot_link`` to that person's pinned faces; a merged-away person is deleted (its name
    moves to the kept person when that one has none). A ``split`` with ``other=-1`` creates the
    new unnamed person. :func:`load_gallery` reads the corrected state back when a caller needs it
    (no caller does: the whole collection is not re-read after every correction).
    """
    faces, cons, _ = load_gallery(gallery, collection)
    resolved = []
    for corr in corrections:
        if corr.kind == "split" and corr.other is not None and int(corr.other) < 0:
            person = gallery.add_person(None, collection=collection, kind="cluster")
            corr = Correction("split", corr.person, corr.faces, int(person.id))
        resolved.append(corr)
    fixed, new_cons = apply_corrections(faces, cons, resolved)
    before = dict(zip(faces.face_ids.tolist(), faces.persons.tolist()))
    pins = [(f, p) for f, p in sorted(new_cons.pins.items()) if cons.pins.get(f) != p or before.get(f) != p]
    if pins:
        gallery.assign_faces([f for f, _ in pins], [p for _, p in pins], collection=collection, assigned_by="user")
    detached = fixed.face_ids[(fixed.persons < 0) & (faces.persons >= 0)]
    if len(detached):
        gallery.assign_faces(detached.tolist(), [None] * len(detached), collection=collection, assigned_by="cluster")
    for corr in resolved:
        if corr.kind != "merge":
            continue
        gone = gallery.person(int(corr.other))  # type: ignore[arg-type]
        kept = gallery.person(int(corr.person))
        if gone.name and not kept.name:
            gallery.update_person(kept.id, name=gone.name, kind="named")
        gallery.delete_person(gone.id, keep_faces=True)
    links = set()
    for face, rejected in new_cons.rejects.items():
        for other, person in new_cons.pins.items():
            if person in rejected and other != face:
                links.add((min(face, other), max(face, other)))
    if links:
        gallery.add_links(sorted(links), "cannot_link", collection=collection)
    ignored = set(_state(gallery, collection).get("ignored", []))
    if ignored & set(new_cons.pins):  # a face the user places again takes part again
        _save_state(gallery, collection, ignored=sorted(ignored - set(new_cons.pins)))
