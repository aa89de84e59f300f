"""Searching a gallery: persons or faces for query embeddings or photos (a mixin of :class:`~facelab.gallery.Gallery`).

Rules (InsightFace Server 0.2's): a person's score is the max cosine similarity over its faces;
persons rank by score descending, then id ascending; within a person the lowest face id wins a
tie. The "same person" threshold is the one given to the call, else the collection's, else the
analyser's (see :func:`facelab.recognition.compare.resolve_threshold`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.gallery.contract import contract_of
from facelab.gallery.records import DEFAULT_COLLECTION, Collection, EmbeddingContract, unit_embeddings
from facelab.recognition.compare import resolve_threshold

__all__ = ["PersonMatch", "FaceMatch", "FaceSearch", "SearchMixin"]


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
        """JSON-safe dict (every field)."""
        return asdict(self)


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
        rejected: why the face was not searched (``"spoof_detected"`` under a liveness gate), else ``None``.
    """

    face: Any
    matches: list[PersonMatch] = field(default_factory=list)
    threshold: float | None = None
    rejected: str | None = None

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
            "rejected": self.rejected,
        }


class SearchMixin:
    """Search methods of :class:`~facelab.gallery.Gallery` (they use its ``store``, engine and indexes)."""

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
        names = self.store.person_names(h[0] for hits in raw for h in hits)
        out = []
        for hits in raw:
            matches = [
                PersonMatch(pid, *names[pid], score, fid, None if thr is None else score >= thr)
                for pid, fid, score in hits
            ]
            out.append(FaceSearch(None, matches, thr))
        return out

    def _person_hits(self, coll: Collection, queries: np.ndarray, k: int, exact: bool | None):
        if self.search_engine == "database":
            return self.store.search_persons_db(coll.id, coll.contract.dim, queries, k, exact=bool(exact))
        with self._index_lock:
            index = self.index_for(coll)
            out: list[list[tuple[int, int, float]]] = [[] for _ in queries]
            pending, want = list(range(len(queries))), k
            while pending:  # unassigned faces are groups of their own (negative): widen until k persons
                again = []
                for i, hits in zip(pending, index.search_groups(queries[pending], want)):
                    keep = [
                        (int(g), int(f), float(s))
                        for g, f, s in zip(hits.groups, hits.vector_ids, hits.scores)
                        if g >= 0
                    ]
                    if len(keep) >= k or len(hits.groups) < want:
                        out[i] = keep[:k]
                    else:
                        again.append(i)
                pending, want = again, want * 4
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
        out = []
        with self._index_lock:
            index = self.index_for(coll)
            for hits in index.search(queries, k):
                groups = index.groups_of(hits.ids) if len(hits.ids) else np.zeros(0, np.int64)
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
        is_live: Any = None,
        max_pixels: int | None = None,
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
            is_live: optional liveness gate ``is_live(image, face) -> bool``
                (:data:`facelab.gallery.enroll.LivenessCheck`); a face it calls not live is not
                searched and comes back with ``rejected="spoof_detected"``.
            max_pixels: decompression-bomb limit for decoding.

        Returns:
            Per image, one :class:`FaceSearch` per detected face (detector order).
        """
        from facelab.io.image import load_image

        coll = self.collection(collection)
        contract = contract_of(analyzer)
        if coll.contract is not None:
            coll.contract.check(contract, f"collection {coll.name!r}")
        arrays = [load_image(image, max_pixels=max_pixels) for image in images]
        per_image = analyzer.analyze_batch(arrays, max_num=max_num)
        thr = self.threshold_for(coll, threshold, analyzer)
        out = [[FaceSearch(f, [], thr) for f in found] for found in per_image]
        queries = []
        for array, row in zip(arrays, out):
            for result in row:
                if is_live is not None and not is_live(array, result.face):
                    result.rejected = "spoof_detected"
                elif result.face.embedding is not None:
                    queries.append(result)
        if queries:
            found = self.search_embeddings(
                np.stack([r.face.embedding for r in queries]), k=k, collection=collection, threshold=threshold,
                contract=contract, exact=exact, analyzer=analyzer,
            )  # fmt: skip
            for result, hits in zip(queries, found):
                result.matches, result.threshold = hits.matches, hits.threshold
        return out
