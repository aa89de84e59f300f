"""Enrolment: a person's photos become gallery faces under a quality policy.

Rules (InsightFace Server 0.2's registration, ``research/insightface-anchor.md`` §6.1-6.2):

* every image must decode (``invalid_image``; ``image_too_large`` over the pixel limit) and show
  exactly one face (``face_not_found``, ``multiple_faces``; ``select="largest"`` keeps the largest
  face instead, as the Server's detection endpoints do);
* ``review="standard"`` (default) applies :class:`~facelab.attributes.quality.QualityPolicy`
  (``face_too_small``, ``low_detection_score``, ``extreme_pose``, ``low_quality``);
  ``review="off"`` only needs a valid embedding (``invalid_embedding``);
* ``review="strict"`` also rejects a face closer to another person than to its own
  (``identity_similarity_conflict``): its best similarity to the person's faces (stored ones and
  those accepted earlier in the same call) must be strictly greater than its best similarity to
  any other person; a person's first face is rejected when another person scores at or above
  the threshold;
* liveness: ``is_live(image, face) -> bool`` is an optional predicate (the hook for the
  liveness models); a face it calls not live is rejected with ``spoof_detected``.

The person and all accepted faces are written in one transaction, so a person is created only
when at least one face is accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.attributes.quality import QualityPolicy, face_quality
from facelab.errors import ConfigError, GalleryError, ImageError
from facelab.gallery.contract import contract_of
from facelab.gallery.records import DEFAULT_COLLECTION, NewFace, Person

__all__ = [
    "REJECTION_REASONS",
    "REVIEW_MODES",
    "LivenessCheck",
    "Rejection",
    "EnrollmentResult",
    "enroll",
    "enroll_folders",
    "face_crop_jpeg",
    "new_face",
    "analyzer_liveness",
]

_logger = logging.getLogger(__name__)

#: Rejection reason codes (InsightFace Server 0.2's, plus ``spoof_detected`` for the liveness hook).
REJECTION_REASONS = (
    "invalid_image",
    "image_too_large",
    "face_not_found",
    "multiple_faces",
    "face_too_small",
    "low_detection_score",
    "low_quality",
    "extreme_pose",
    "invalid_embedding",
    "identity_similarity_conflict",
    "spoof_detected",
)

#: Review modes: no quality checks, the quality policy, the policy plus the identity check.
REVIEW_MODES = ("off", "standard", "strict")

#: ``is_live(image, face) -> bool``: ``image`` is the ``(H, W, 3)`` ``uint8`` BGR photo, ``face``
#: the detected :class:`~facelab.structures.Face`; ``False`` rejects it as ``spoof_detected``.
LivenessCheck = Callable[[np.ndarray, Any], bool]

#: Side of the stored face crop (the Server's 112x112 box crop).
CROP_SIZE = 112


@dataclass(frozen=True)
class Rejection:
    """An image (or its face) that was not enrolled.

    Attributes:
        source: the path, or ``"<image N>"`` for an in-memory image.
        reasons: codes from :data:`REJECTION_REASONS`.
        detail: a readable explanation.
    """

    source: str
    reasons: tuple[str, ...]
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"source": self.source, "reasons": list(self.reasons), "detail": self.detail}


@dataclass
class EnrollmentResult:
    """What :func:`enroll` did.

    Attributes:
        person: the person (``None`` when nothing was accepted and no person existed).
        face_ids: ids of the faces stored.
        accepted: sources of those faces, in order.
        rejected: the images not enrolled and why.
        skipped: sources already enrolled for this person (same content hash; ``skip_known``).
    """

    person: Person | None
    face_ids: list[int] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one face was stored (or everything was already enrolled)."""
        return bool(self.face_ids) or (bool(self.skipped) and not self.rejected)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "person": None if self.person is None else {"id": self.person.id, "name": self.person.name},
            "face_ids": list(self.face_ids),
            "accepted": list(self.accepted),
            "rejected": [r.to_dict() for r in self.rejected],
            "skipped": list(self.skipped),
        }


def face_crop_jpeg(image: np.ndarray, bbox: np.ndarray, size: int = CROP_SIZE, quality: int = 90) -> bytes | None:
    """A ``size``×``size`` JPEG of a face's box (clipped to the image), or ``None`` when the box is empty.

    Args:
        image: ``(H, W, 3)`` ``uint8`` BGR.
        bbox: ``(4,)`` ``[x1, y1, x2, y2]`` pixels.
        size: side of the square crop, pixels.
        quality: JPEG quality (0-100).
    """
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in bbox)
    ix1, iy1, ix2, iy2 = max(0, int(x1)), max(0, int(y1)), min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return None
    crop = cv2.resize(image[iy1:iy2, ix1:ix2], (size, size), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return bytes(data) if ok else None


def new_face(face: Any, image: np.ndarray | None, sha256: str | None, save_crops: bool, **fields: Any) -> NewFace:
    """A detected face as a store row: its embedding, box, keypoints, scores, quality and (optionally) crop.

    Args:
        face: the :class:`~facelab.structures.Face` (with ``embedding`` and, when known, ``quality``).
        image: the ``(H, W, 3)`` ``uint8`` BGR photo it was found in (for the crop), or ``None``.
        sha256: the photo file's content hash, or ``None``.
        save_crops: store a JPEG crop (:func:`face_crop_jpeg`) when ``image`` is given.
        **fields: other :class:`~facelab.gallery.records.NewFace` fields (``person_id``, ``source``,
            ``assigned_by``, ``source_path``, or ``embedding`` to store another vector than the face's).
    """
    q = face.quality
    row: dict[str, Any] = {
        "embedding": face.embedding,
        "bbox": face.bbox,
        "kps": face.kps,
        "det_score": float(face.score),
        "quality": None if q is None else float(q.score),
        "quality_detail": {} if q is None else q.to_dict(),
        "source_sha256": sha256,
        "crop": face_crop_jpeg(image, face.bbox) if save_crops and image is not None else None,
    }
    row.update(fields)
    return NewFace(**row)


def analyzer_liveness(image: np.ndarray, face: Any) -> bool:
    """A :data:`LivenessCheck` reading the liveness the analyser computed (``face.liveness.is_live``).

    Use it with an analyser that loads the liveness models (``modules=[..., "liveness"]``).

    Raises:
        ConfigError: the face carries no liveness result (the analyser has no liveness model).
    """
    result = getattr(face, "liveness", None)
    if result is None:
        raise ConfigError(
            "liveness was required, but the analyser computed none: load its liveness models "
            "(FaceAnalyzer(..., modules=[..., 'liveness']))"
        )
    return bool(result.is_live)


def _source_name(item: Any, i: int) -> str:
    return os.fsdecode(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else f"<image {i}>"


def _read(item: Any, i: int, max_pixels: int | None) -> tuple[np.ndarray | None, str | None, Rejection | None]:
    """``(image, sha256, rejection)`` of one source; a file is read once (the hash and the image share its bytes)."""
    from facelab.io.image import load_image
    from facelab.io.prefetch import load_decoded

    name = _source_name(item, i)
    if isinstance(item, (str, os.PathLike)):
        decoded = load_decoded(Path(os.fsdecode(os.fspath(item))), max_pixels, digest=True)
        image, digest, text = decoded.image, decoded.sha256, decoded.error
    else:
        digest = hashlib.sha256(bytes(item)).hexdigest() if isinstance(item, (bytes, bytearray, memoryview)) else None
        try:
            image, text = load_image(item, max_pixels=max_pixels), None
        except ImageError as exc:  # its messages name the problem
            image, text = None, str(exc)
    if text is not None:
        code = "image_too_large" if "over the limit" in text else "invalid_image"
        return None, digest, Rejection(name, (code,), text)
    return image, digest, None


def _largest(faces: list[Any]) -> Any:
    areas = [float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])) for f in faces]
    return faces[int(np.argmax(areas))]


def _unit(embedding: Any) -> np.ndarray | None:
    if embedding is None:
        return None
    vec = np.asarray(embedding, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vec)) if np.isfinite(vec).all() else 0.0
    return None if norm <= 1e-12 else (vec / norm).astype(np.float32)


def enroll(
    gallery: Any,
    images: Sequence[Any],
    analyzer: Any,
    *,
    name: str | None = None,
    person: Person | int | None = None,
    external_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    collection: str = DEFAULT_COLLECTION,
    review: str = "standard",
    policy: QualityPolicy | None = None,
    select: str = "single",
    is_live: LivenessCheck | None = None,
    threshold: float | str | os.PathLike | None = None,
    skip_known: bool = False,
    max_pixels: int | None = None,
) -> EnrollmentResult:
    """Enrol photos of one person (see the module docstring for the rules).

    Args:
        gallery: the :class:`~facelab.gallery.Gallery`.
        images: paths, bytes, ``(H, W, 3)`` ``uint8`` BGR arrays or PIL images.
        analyzer: the :class:`~facelab.pipeline.FaceAnalyzer` (its recogniser fixes or must match
            the collection's embedding contract).
        name: create a new person with this name.
        person: or add to this existing person (a :class:`Person` or its id).
        external_id: the new person's external id (unique in the collection).
        metadata: the new person's metadata (a JSON-safe dict).
        collection: the collection (created when missing).
        review: ``"off"``, ``"standard"`` or ``"strict"`` (:data:`REVIEW_MODES`).
        policy: the quality policy (default: :class:`QualityPolicy`'s Server defaults).
        select: ``"single"`` (reject images with several faces) or ``"largest"``.
        is_live: optional liveness predicate (:data:`LivenessCheck`).
        threshold: for ``strict``: the "same person" threshold (default: the collection's, else
            the analyser's).
        skip_known: skip images whose content hash is already among the person's faces.
        max_pixels: decompression-bomb limit for decoding.

    Returns:
        :class:`EnrollmentResult`.

    Raises:
        ConfigError: bad arguments (neither or both of ``name`` and ``person``, unknown mode).
        ContractMismatchError: the collection holds another model's embeddings.
        GalleryError: the person is unknown or in another collection.
    """
    if review not in REVIEW_MODES:
        raise ConfigError(f"review must be one of {REVIEW_MODES}, got {review!r}")
    if select not in ("single", "largest"):
        raise ConfigError(f"select must be 'single' or 'largest', got {select!r}")
    if (name is None) == (person is None):
        raise ConfigError("enroll: give either name= (a new person) or person= (an existing one)")
    policy = policy or QualityPolicy()
    contract = contract_of(analyzer)
    coll = gallery.collection(collection, create=True)
    coll = gallery.ensure_contract(coll, contract)
    target: Person | None = None
    if person is not None:
        target = gallery.store.person(person.id if isinstance(person, Person) else int(person))
        if target.collection_id != coll.id:
            raise GalleryError(f"person {target.id} is not in collection {coll.name!r}")
    own = (
        []
        if target is None
        else gallery.store.faces(person_id=target.id, with_embeddings=skip_known or review == "strict")
    )
    known = {f.source_sha256 for f in own if f.source_sha256}
    own_vecs = [f.embedding for f in own if f.embedding is not None]
    result = EnrollmentResult(target)
    loaded: list[tuple[str, np.ndarray, str | None]] = []
    for i, item in enumerate(images):
        image, digest, rejection = _read(item, i, max_pixels)
        if rejection is not None:
            result.rejected.append(rejection)
        elif skip_known and digest is not None and digest in known:
            result.skipped.append(_source_name(item, i))
        else:
            loaded.append((_source_name(item, i), image, digest))
    thr = None
    if review == "strict":
        thr = gallery.threshold_for(coll, threshold, analyzer)
    candidates: list[tuple[str, NewFace, np.ndarray]] = []
    for start in range(0, len(loaded), 8):
        chunk = loaded[start : start + 8]
        for (source, image, digest), faces in zip(chunk, analyzer.analyze_batch([c[1] for c in chunk])):
            face, rejection = _choose(source, faces, select)
            if rejection is None:
                rejection = _review(source, image, face, review, policy, is_live)
            vec = None if rejection is not None else _unit(face.embedding)
            if rejection is None and vec is None:
                rejection = Rejection(source, ("invalid_embedding",), "the recogniser gave no usable embedding")
            if rejection is None and review == "strict":
                rejection = _identity_conflict(
                    gallery, coll, source, vec, target, own_vecs + [c[2] for c in candidates], thr
                )
            if rejection is not None:
                result.rejected.append(rejection)
                continue
            new = new_face(
                face, image, digest, coll.save_crops, embedding=vec, source="enroll", assigned_by="enroll",
                source_path=Path(source) if not source.startswith("<image ") else None,
            )  # fmt: skip
            candidates.append((source, new, vec))
    order = {_source_name(item, i): i for i, item in enumerate(images)}
    result.rejected.sort(key=lambda r: order.get(r.source, len(order)))
    if not candidates:
        return result
    with gallery.store.transaction() as tx:
        if target is None:
            target = gallery.store.add_person(coll.id, name, external_id=external_id, metadata=metadata)
        for _, new, _ in candidates:
            new.person_id = target.id
        ids = gallery.store.add_faces(coll.id, [c[1] for c in candidates])
    vecs = np.stack([c[2] for c in candidates])
    gallery.faces_added(tx, coll.id, ids, vecs, [target.id] * len(ids))
    result.person = gallery.store.person(target.id)
    result.face_ids = ids
    result.accepted = [c[0] for c in candidates]
    return result


def _choose(source: str, faces: list[Any], select: str) -> tuple[Any, Rejection | None]:
    if not faces:
        return None, Rejection(source, ("face_not_found",), "no face detected")
    if len(faces) > 1 and select == "single":
        return None, Rejection(source, ("multiple_faces",), f"{len(faces)} faces detected; enrol one face per image")
    return (faces[0] if len(faces) == 1 else _largest(faces)), None


def _review(
    source: str, image: np.ndarray, face: Any, review: str, policy: QualityPolicy, is_live: LivenessCheck | None
) -> Rejection | None:
    reasons: list[str] = []
    if review != "off":
        quality = face.quality or face_quality(image, face.bbox, face.kps, face.score)
        face.quality = quality
        reasons += policy.reasons(quality, face.score)
    if is_live is not None and not is_live(image, face):
        reasons.append("spoof_detected")
    if not reasons:
        return None
    q = face.quality
    detail = f"detector score {face.score:.3f}" + (
        "" if q is None else f", quality {q.score:.3f}, face {q.face_size:.0f} px"
    )
    return Rejection(source, tuple(reasons), detail)


def _identity_conflict(
    gallery: Any,
    coll: Any,
    source: str,
    vec: np.ndarray,
    target: Person | None,
    own: list[np.ndarray],
    thr: float | None,
) -> Rejection | None:
    own_best = float(max(np.dot(v, vec) for v in own)) if own else None
    hits = gallery.search_embeddings(vec, k=2, collection=coll.name, threshold=None, exact=True)[0].matches
    others = [m for m in hits if target is None or m.person_id != target.id]
    if not others:
        return None
    other = others[0]
    if own_best is None:
        if thr is not None and other.score >= thr:
            return Rejection(
                source, ("identity_similarity_conflict",),
                f"looks like {other.label()} (similarity {other.score:.3f} >= threshold {thr:.3f})",
            )  # fmt: skip
        return None
    if own_best <= other.score:
        return Rejection(
            source, ("identity_similarity_conflict",),
            f"closer to {other.label()} ({other.score:.3f}) than to this person ({own_best:.3f})",
        )  # fmt: skip
    return None


def enroll_folders(gallery: Any, root: str | os.PathLike, analyzer: Any, **options: Any) -> list[EnrollmentResult]:
    """Enrol one person per top-level folder of ``root`` (the folder name is the person's name).

    A folder whose name matches exactly one named person adds to that person; re-running skips
    images already enrolled for them (same content hash), so an interrupted run can be resumed.

    Args:
        gallery: the gallery.
        root: a folder of person folders (``root/Alice/*.jpg``, ``root/Bob/...``; images anywhere
            below each person folder).
        analyzer: the analyser.
        **options: passed to :func:`enroll` (``collection``, ``review``, ``policy``, ...).

    Returns:
        One :class:`EnrollmentResult` per person folder, in name order.

    Raises:
        GalleryError: ``root`` is not a folder, or a folder name matches several persons.
    """
    from facelab.io.paths import expand_image_inputs

    base = Path(root)
    if not base.is_dir():
        raise GalleryError(f"--people-from-folders {base}: not a folder")
    collection = options.get("collection", DEFAULT_COLLECTION)
    coll = gallery.collection(collection, create=True)
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    plan = []
    for folder in folders:
        named = gallery.store.persons(coll.id, name=folder.name, kind="named")
        if len(named) > 1:
            raise GalleryError(
                f"folder {folder.name!r}: {len(named)} persons have that name (ids {[p.id for p in named]}); rename one"
            )
        try:
            images = expand_image_inputs([folder])
        except ImageError:
            images = []
        if images:
            plan.append((folder, named[0] if named else None, images))
    results = []
    for folder, person, images in plan:
        if person is None:
            res = enroll(gallery, images, analyzer, name=folder.name, skip_known=True, **options)
        else:
            res = enroll(gallery, images, analyzer, person=person, skip_known=True, **options)
        _logger.info("%s: %d accepted, %d rejected, %d already enrolled", folder.name, len(res.face_ids),
                     len(res.rejected), len(res.skipped))  # fmt: skip
        results.append(res)
    return results
