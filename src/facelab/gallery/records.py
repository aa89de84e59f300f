"""The gallery's data model: collections, persons, faces, images, and the embedding contract.

Plain frozen dataclasses returned by every backend (SQLite, PostgreSQL); no database types leak
out. Conventions:

* ids are 63-bit integers assigned by the store, unique across the whole gallery (a person id or
  face id alone names it, whatever its collection);
* embeddings are ``float32`` and L2-normalised (unit length), shape ``(D,)`` or ``(N, D)``;
* boxes are ``[x1, y1, x2, y2]`` pixels of the source image, keypoints ``(5, 2)`` pixels in
  :class:`~facelab.structures.FaceKeypoint` order (see :mod:`facelab.structures`);
* paths are kept as the operating system gives them (bytes on POSIX, so names that are not
  valid UTF-8 survive a round trip) and returned as :class:`pathlib.Path`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, ContractMismatchError

__all__ = [
    "EmbeddingContract",
    "Collection",
    "Person",
    "FaceRecord",
    "ImageRecord",
    "FaceArrays",
    "NewFace",
    "DEFAULT_COLLECTION",
    "PERSON_KINDS",
    "FACE_SOURCES",
    "ASSIGNERS",
    "LINK_KINDS",
    "unit_embeddings",
    "stored_vectors",
    "check_text",
]

#: Collection used when none is named.
DEFAULT_COLLECTION = "default"

#: ``Person.kind``: a person a user named or enrolled, or an unnamed person made by clustering.
PERSON_KINDS = ("named", "cluster")

#: ``FaceRecord.source``: enrolled for a person, found while indexing a photo library, or imported.
FACE_SOURCES = ("enroll", "index", "import")

#: ``FaceRecord.assigned_by``: who attached the face to its person (``None`` = unassigned).
#: Re-clustering may move ``"cluster"`` assignments, never ``"enroll"`` or ``"user"`` ones.
ASSIGNERS = ("enroll", "user", "cluster")

#: Pairwise face constraints for clustering: same person (``must_link``) or not (``cannot_link``).
LINK_KINDS = ("must_link", "cannot_link")

#: Version tag of facelab's embedding contract id (bump when the id's recipe changes).
_CONTRACT_TAG = "facelab-emb-v1-sha256:"

#: Largest length of a name, external id or metadata JSON accepted (characters).
MAX_TEXT = 1 << 20


@dataclass(frozen=True)
class EmbeddingContract:
    """What makes two embeddings comparable: the recogniser's bytes, its preprocessing and dimension.

    Attributes:
        model: the recogniser card's name, for messages (e.g. ``"dlib_resnet.open"``); not part of
            :attr:`id`, so renaming a card keeps old galleries usable.
        sha256: full lowercase hex SHA-256 of the recogniser file.
        preprocessing: the input recipe (architecture, alignment template, input size, colour order,
            mean/std, layout) as one string; see :func:`facelab.gallery.contract_of`.
        dim: embedding dimension ``D``.
    """

    model: str
    sha256: str
    preprocessing: str
    dim: int

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise ConfigError(f"embedding contract: dimension must be a positive integer, got {self.dim!r}")

    @property
    def id(self) -> str:
        """``"facelab-emb-v1-sha256:" + sha256(json([sha256, dim, preprocessing]))`` (stable, 64 hex digits)."""
        payload = json.dumps([self.sha256.lower(), self.dim, self.preprocessing], separators=(",", ":"))
        return _CONTRACT_TAG + hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        """One line naming the model: ``"dlib_resnet.open (128-d, sha256 028e1901…, preprocessing …)"``."""
        return f"{self.model} ({self.dim}-d, sha256 {self.sha256[:12]}…, preprocessing {self.preprocessing})"

    def check(self, other: EmbeddingContract, what: str) -> None:
        """Raise :class:`~facelab.errors.ContractMismatchError` unless ``other`` has the same :attr:`id`.

        Args:
            other: the contract of the embeddings offered.
            what: the holder named in the message, e.g. ``"collection 'default'"``.
        """
        if other.id != self.id:
            raise ContractMismatchError(
                f"{what} holds embeddings of {self.describe()}, but these come from {other.describe()}; "
                "embeddings of different models cannot be compared: use a collection made for this model, "
                "or migrate this one with `facelab gallery reembed`"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (with the derived ``id``)."""
        return {**asdict(self), "id": self.id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingContract:
        """Inverse of :meth:`to_dict` (``id`` is recomputed and checked when present)."""
        try:
            contract = cls(str(data["model"]), str(data["sha256"]), str(data["preprocessing"]), int(data["dim"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not an embedding contract: {data!r} ({exc})") from exc
        if "id" in data and data["id"] != contract.id:
            raise ConfigError(f"embedding contract id {data['id']!r} does not match its fields ({contract.id})")
        return contract


@dataclass(frozen=True)
class Collection:
    """A set of persons and faces searched together, all embedded by one model.

    Attributes:
        id: store id.
        name: unique name (``"default"`` unless chosen).
        threshold: cosine "same person" threshold of searches (``None``: the analyser's or none).
        contract: the embedding contract, ``None`` until the first embedding is added.
        save_crops: whether enrolment and indexing keep a JPEG crop of each face.
        metadata: free JSON-safe data.
        revision: counter bumped by every committed write (the in-memory index follows it).
        created_at: seconds since the epoch.
    """

    id: int
    name: str
    threshold: float | None
    contract: EmbeddingContract | None
    save_crops: bool
    metadata: dict[str, Any]
    revision: int
    created_at: float


@dataclass(frozen=True)
class Person:
    """Someone the gallery can name.

    Attributes:
        id: store id (unique in the gallery).
        collection_id: the collection's id.
        name: display name; ``None`` for an unnamed person made by clustering.
        external_id: the caller's own key, unique in its collection, or ``None``.
        kind: ``"named"`` or ``"cluster"`` (:data:`PERSON_KINDS`).
        metadata: free JSON-safe data.
        face_count: number of faces attached.
        created_at / updated_at: seconds since the epoch.
    """

    id: int
    collection_id: int
    name: str | None
    external_id: str | None
    kind: str
    metadata: dict[str, Any]
    face_count: int
    created_at: float
    updated_at: float

    def label(self) -> str:
        """The name, or ``"person <id>"`` for an unnamed one."""
        return self.name if self.name is not None else f"person {self.id}"


@dataclass(frozen=True)
class FaceRecord:
    """One stored face.

    Attributes:
        id: store id (unique in the gallery; also the vector id of the search index).
        collection_id / person_id / image_id: owners; ``person_id`` is ``None`` while unassigned,
            ``image_id`` is ``None`` for enrolled faces (they keep ``source_path`` instead).
        source: ``"enroll"``, ``"index"`` or ``"import"`` (:data:`FACE_SOURCES`).
        assigned_by: ``"enroll"``, ``"user"``, ``"cluster"`` or ``None`` (:data:`ASSIGNERS`).
        bbox: ``(4,)`` ``float32`` box, or ``None``.
        kps: ``(5, 2)`` ``float32`` keypoints, or ``None``.
        det_score: detector score, or ``None``.
        quality: :class:`~facelab.attributes.quality.FaceQuality` score, or ``None``.
        quality_detail: the full quality dict (sharpness, pose, ...), or ``{}``.
        source_sha256: SHA-256 of the source image file, or ``None``.
        source_path: the source image, or ``None``.
        has_crop: a JPEG crop is stored (read it with ``Gallery.face_crop``).
        embedding: ``(D,)`` ``float32`` unit vector when asked for, else ``None``.
        created_at: seconds since the epoch.
    """

    id: int
    collection_id: int
    person_id: int | None
    image_id: int | None
    source: str
    assigned_by: str | None
    bbox: np.ndarray | None
    kps: np.ndarray | None
    det_score: float | None
    quality: float | None
    quality_detail: dict[str, Any]
    source_sha256: str | None
    source_path: Path | None
    has_crop: bool
    embedding: np.ndarray | None
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (arrays as lists; the embedding only when loaded)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("bbox", "kps", "embedding", "source_path")}
        out["bbox"] = None if self.bbox is None else [float(v) for v in self.bbox]
        out["kps"] = None if self.kps is None else self.kps.astype(float).tolist()
        out["source_path"] = None if self.source_path is None else str(self.source_path)
        if self.embedding is not None:
            out["embedding"] = self.embedding.astype(float).tolist()
        return out


@dataclass(frozen=True)
class ImageRecord:
    """One photo seen by ``facelab index``.

    Attributes:
        id: store id.
        collection_id: the collection's id.
        path: the file, as indexed (absolute).
        sha256: content hash (``None`` when it could not be read).
        size / mtime_ns: file size and modification time when indexed (a changed pair means
            re-hash; a changed hash means re-index).
        width / height: decoded size in pixels, or ``None`` after an error.
        status: ``"done"`` or ``"error"``.
        error: the reason after an error.
        face_count: faces stored for it.
        indexed_at: seconds since the epoch.
    """

    id: int
    collection_id: int
    path: Path
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    status: str
    error: str | None
    face_count: int
    indexed_at: float


@dataclass
class NewFace:
    """A face to store (what enrolment and indexing hand to a backend).

    Attributes:
        embedding: ``(D,)`` embedding (normalised on the way in).
        person_id: owner, or ``None`` (unassigned).
        image_key: for indexing: the position of the image in the same write batch, else ``None``.
        source: :data:`FACE_SOURCES`.
        assigned_by: :data:`ASSIGNERS` or ``None``.
        bbox / kps / det_score / quality / quality_detail: detection and quality, when known.
        source_sha256 / source_path: the source image, when known.
        crop: JPEG bytes, or ``None``.
    """

    embedding: np.ndarray
    person_id: int | None = None
    image_key: int | None = None
    source: str = "enroll"
    assigned_by: str | None = None
    bbox: np.ndarray | None = None
    kps: np.ndarray | None = None
    det_score: float | None = None
    quality: float | None = None
    quality_detail: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    source_path: Path | None = None
    crop: bytes | None = None


@dataclass(frozen=True)
class FaceArrays:
    """Every face of a collection as arrays (for search indexes and clustering).

    Attributes:
        ids: ``(N,)`` ``int64`` face ids, ascending.
        embeddings: ``(N, D)`` ``float32`` unit vectors.
        image_ids: ``(N,)`` ``int64``; ``-1`` for faces without an image (enrolled ones).
        person_ids: ``(N,)`` ``int64``; ``-1`` for unassigned faces.
        assigned_by: ``(N,)`` object array of :data:`ASSIGNERS` or ``None``.
    """

    ids: np.ndarray
    embeddings: np.ndarray
    image_ids: np.ndarray
    person_ids: np.ndarray
    assigned_by: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def unit_embeddings(vectors: Any, dim: int | None = None) -> np.ndarray:
    """Check and L2-normalise embeddings.

    Args:
        vectors: ``(D,)`` or ``(N, D)`` numbers.
        dim: the required ``D``, or ``None``.

    Returns:
        ``(N, D)`` ``float32`` unit vectors (C-contiguous).

    Raises:
        ConfigError: wrong shape or dimension, NaN/infinity, or a zero vector.

    Example:
        >>> unit_embeddings([3.0, 4.0]).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ConfigError(f"embeddings must be (N, D) numbers, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ConfigError(f"embeddings are {arr.shape[1]}-d, expected {dim}-d")
    if not np.isfinite(arr).all():
        raise ConfigError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise ConfigError("an embedding is the zero vector")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def stored_vectors(vectors: Sequence[Any]) -> np.ndarray | None:
    """The exact ``float32`` rows a store keeps for these embeddings (each normalised as one row).

    Stores normalise every face on its own with :func:`unit_embeddings`; an in-memory index fed
    with this function holds bit-identical vectors, so it agrees with one rebuilt from the store.
    Returns ``None`` for no vectors.
    """
    rows = [unit_embeddings(v)[0] for v in vectors]
    return np.stack(rows) if rows else None


def check_text(value: str | None, what: str, *, allow_none: bool = True) -> str | None:
    """Check a name or external id: ``str`` (or ``None``), encodable as UTF-8, no NUL, at most 1 MiB.

    Quotes, SQL, newlines and any Unicode are kept as they are (every query binds parameters).
    PostgreSQL cannot store NUL characters in text, so both backends refuse them alike.

    Raises:
        ConfigError: naming ``what`` and the problem.
    """
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{what} is required")
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ConfigError(f"{what} contains a NUL character")
    if len(value) > MAX_TEXT:
        raise ConfigError(f"{what} is {len(value)} characters long; the limit is {MAX_TEXT}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{what} is not valid Unicode text ({exc.reason} at {exc.start})") from None
    return value


def metadata_json(metadata: dict[str, Any] | None, what: str = "metadata") -> str:
    """Metadata as compact JSON text (ASCII-escaped, so any string survives every backend).

    Raises:
        ConfigError: not a dict, not JSON-serialisable, non-finite numbers, or over 1 MiB.
    """
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{what} must be a dict, got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, ensure_ascii=True, allow_nan=False, separators=(",", ":"), sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable: {exc}") from None
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{what} is {len(text)} characters as JSON; the limit is {MAX_TEXT}")
    return text
