"""Who is in a track: a quality-weighted template per track, matched against known people.

A track collects up to ``max_samples`` embeddings, keeping the ones of highest face quality
(``face.quality.score``, :mod:`facelab.attributes.quality`). Its template is the quality-weighted
mean of the L2-normalised samples, re-normalised (the pooling PrivateFrame and the IJB recipe use;
``../shared/research/video-anchors.md`` §6). After each new sample the template is matched against
a :class:`Matcher`; the decision is a person when the best person's similarity reaches the
threshold *and* beats the runner-up by the margin, otherwise "unknown". A decision becomes the
track's identity after ``confirm_frames`` consecutive samples agree (InsightFace Server's
``confirm_frames``, default 3). A track becomes a *conflict* (probably two people merged by the
tracker) when the template's confirmed person changes to another person, or when
``confirm_frames`` consecutive samples on their own name another person than the confirmed one;
callers that exempt people from anonymisation treat a conflict as unknown (PrivateFrame's
"unanimous" rule).

Any object with ``search(embeddings, top_k) -> list[list[Candidate]]`` is a matcher:
:class:`GalleryMatcher` (a :mod:`facelab.gallery` collection) or :class:`ReferenceMatcher` (a few
photos per person).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from facelab.errors import ConfigError, ImageError
from facelab.recognition.compare import normalize

__all__ = [
    "Candidate",
    "Decision",
    "Matcher",
    "ReferenceMatcher",
    "GalleryMatcher",
    "IdentityConfig",
    "TrackIdentity",
    "decide",
    "default_margin",
    "names_of",
    "resolve_rules",
]

_logger = logging.getLogger(__name__)


class Candidate(NamedTuple):
    """One person a query embedding may be: id, display name and cosine similarity."""

    person_id: str
    name: str
    score: float


@runtime_checkable
class Matcher(Protocol):
    """What per-track identity needs from a gallery.

    ``search`` takes ``(n, d)`` embeddings (any norm) and returns, per row, up to ``top_k``
    :class:`Candidate` of *different* people, best first, each scored by its best sample's cosine
    similarity. ``threshold`` is the collection's match threshold, or ``None``.
    """

    threshold: float | None

    def search(self, embeddings: np.ndarray, top_k: int = 2) -> list[list[Candidate]]:
        """Best people for each embedding (see the class docstring)."""
        ...


class ReferenceMatcher:
    """An in-memory matcher: a few reference embeddings per person (exact cosine search).

    Args:
        people: ``{person_id: (name, (m, d) embeddings)}``.
        threshold: match threshold to report as :attr:`threshold` (usually the recogniser's).

    Example:
        >>> m = ReferenceMatcher({"ann": ("Ann", np.array([[1.0, 0.0]])), "bob": ("Bob", np.array([[0.0, 1.0]]))})
        >>> [c.person_id for c in m.search(np.array([[0.9, 0.1]]))[0]]
        ['ann', 'bob']
    """

    def __init__(self, people: Mapping[str, tuple[str, np.ndarray]], threshold: float | None = None) -> None:
        if not people:
            raise ConfigError("ReferenceMatcher: no people given")
        rows, counts, dims = [], [], set()
        self.names: dict[str, str] = {}
        for person_id, (name, emb) in people.items():
            emb = np.asarray(emb, dtype=np.float32)
            emb = emb.reshape(-1, emb.shape[-1]) if emb.size else emb.reshape(0, 0)
            if len(emb) == 0:
                raise ConfigError(f"ReferenceMatcher: person {person_id!r} has no embedding")
            if not np.isfinite(emb).all():
                raise ConfigError(f"ReferenceMatcher: person {person_id!r} has a NaN or infinite embedding")
            dims.add(emb.shape[1])
            rows.append(normalize(emb))
            counts.append(len(emb))
            self.names[str(person_id)] = str(name)
        if len(dims) != 1:
            raise ConfigError(f"ReferenceMatcher: embeddings of different sizes {sorted(dims)}")
        self.matrix = np.concatenate(rows)  # each person's rows together, in the order of person_ids
        self.person_ids = list(self.names)
        self._starts = np.cumsum([0] + counts[:-1])  # first row of each person
        self.threshold = threshold

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.matrix.shape[1])

    def search(self, embeddings: np.ndarray, top_k: int = 2) -> list[list[Candidate]]:
        """Best ``top_k`` people per ``(n, d)`` embedding (person score = max over its references)."""
        q = np.asarray(embeddings, dtype=np.float32)
        q = q.reshape(-1, q.shape[-1])
        if q.shape[1] != self.dim:
            raise ConfigError(f"ReferenceMatcher: query embeddings are {q.shape[1]}-d, references {self.dim}-d")
        sims = normalize(q) @ self.matrix.T  # (n, rows)
        per_person = np.maximum.reduceat(sims, self._starts, axis=1)  # (n, people)
        out = []
        for row in per_person:
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([Candidate(self.person_ids[j], self.names[self.person_ids[j]], float(row[j])) for j in order])
        return out

    @classmethod
    def from_folder(cls, analyzer: Any, folder: str | os.PathLike) -> ReferenceMatcher:
        """Reference photos from a folder: one sub-folder per person (its name is the person's id and name).

        Loose image files in ``folder`` itself count as one person each, named by the file stem.
        Each photo contributes its largest face (as PrivateFrame's reference folder).

        Raises:
            ConfigError: the folder is missing, has no photos, a person has no usable face, or
                the analyser has no recogniser.
        """
        from facelab.io.paths import IMAGE_SUFFIXES

        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"reference folder {root} does not exist or is not a folder")
        if analyzer.recognizer is None:
            raise ConfigError(f"pack {analyzer.pack_name!r} has no recogniser; people cannot be matched")
        groups: dict[str, list[Path]] = {}
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                photos = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if photos:
                    groups[entry.name] = photos
            elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                groups.setdefault(entry.stem, []).append(entry)
        if not groups:
            raise ConfigError(f"reference folder {root} holds no photos (one sub-folder of photos per person)")
        people: dict[str, tuple[str, np.ndarray]] = {}
        for person, photos in groups.items():
            embs = []
            for photo in photos:
                try:
                    faces = analyzer.analyze(photo, max_num=1, metric="max")
                except ImageError as exc:
                    _logger.warning("reference photo skipped: %s", exc)
                    continue
                if faces and faces[0].embedding is not None:
                    embs.append(faces[0].normed_embedding)
                else:
                    _logger.warning("reference photo %s: no face found; skipped", photo)
            if not embs:
                raise ConfigError(f"reference person {person!r}: no face found in {len(photos)} photo(s)")
            people[person] = (person, np.stack(embs))
        return cls(people, threshold=analyzer.threshold)


class GalleryMatcher:
    """A collection of a :class:`facelab.gallery.Gallery` as a :class:`Matcher`.

    Args:
        gallery: an open gallery.
        collection: the collection searched.
        analyzer: the :class:`~facelab.pipeline.FaceAnalyzer` whose embeddings are searched: its
            embedding contract is checked against the collection's now, and its threshold is the
            last fallback.
        threshold: cosine threshold (or a calibration JSON); default the collection's, else the
            analyser's (the gallery's own rule, ``Gallery.threshold_for``).

    Raises:
        GalleryError: no such collection, or (``ContractMismatchError``) it holds another
            recogniser's embeddings.
        ConfigError: the collection holds no face yet.
    """

    def __init__(
        self, gallery: Any, collection: str = "default", *, analyzer: Any = None, threshold: Any = None
    ) -> None:
        coll = gallery.collection(collection)
        if coll.contract is None:
            raise ConfigError(f"gallery collection {coll.name!r} holds no faces yet; enrol people first")
        self.contract = None
        if analyzer is not None:
            from facelab.gallery.contract import contract_of

            self.contract = contract_of(analyzer)
            coll.contract.check(self.contract, f"collection {coll.name!r}")
        self.gallery = gallery
        self.collection = coll.name
        self.threshold = gallery.threshold_for(coll, threshold, analyzer)

    def search(self, embeddings: np.ndarray, top_k: int = 2) -> list[list[Candidate]]:
        """Best ``top_k`` persons per embedding (``Gallery.search_embeddings``)."""
        results = self.gallery.search_embeddings(
            np.asarray(embeddings, dtype=np.float32),
            k=top_k,
            collection=self.collection,
            threshold=self.threshold,
            contract=self.contract,
        )
        return [[Candidate(str(m.person_id), m.label(), float(m.score)) for m in r.matches] for r in results]

    def resolve(self, person: str) -> str:
        """The id (as text) of a person given by id, external id or unique name."""
        return str(self.gallery.find_person(person, self.collection).id)


class Decision(NamedTuple):
    """The match of one template.

    ``person_id`` is ``None`` for "unknown"; ``score`` and ``second`` are the top-2 similarities.
    """

    person_id: str | None
    name: str | None
    score: float | None
    second: float | None

    @property
    def key(self) -> str | None:
        """What must agree over consecutive samples: the person id (``None`` = unknown)."""
        return self.person_id


UNKNOWN = Decision(None, None, None, None)


def default_margin(threshold: float) -> float:
    """Runner-up margin when none is given: a tenth of the distance from the threshold to 1.

    Cosine scales differ between recognisers (ArcFace matches at 0.4, dlib's ResNet at 0.923), so
    a fixed margin would be loose for one and impossible for the other; at the ArcFace threshold
    this gives 0.06, between PersonAnalysis's 0.05 and PrivateFrame's 0.08.
    """
    return 0.1 * (1.0 - float(threshold))


def decide(candidates: Sequence[Candidate], threshold: float, margin: float) -> Decision:
    """Person or unknown from best-first candidates: ``best >= threshold`` and ``best - second >= margin``."""
    if not candidates:
        return UNKNOWN
    best = candidates[0]
    second = candidates[1].score if len(candidates) > 1 else None
    gap = best.score - (second if second is not None else -1.0)
    if best.score >= threshold and gap >= margin:
        return Decision(best.person_id, best.name, float(best.score), second)
    return Decision(None, None, float(best.score), second)


@dataclass(frozen=True)
class IdentityConfig:
    """Per-track identity rules.

    Attributes:
        threshold: cosine similarity a person must reach; ``None`` takes the matcher's, else the
            recogniser's (``FaceAnalyzer.threshold``).
        margin: lead the best person needs over the runner-up; ``None`` = :func:`default_margin`.
        confirm_frames: consecutive agreeing samples before a decision becomes the identity
            (InsightFace Server's monitors: 3).
        max_samples: samples kept per track (the highest quality ones).
        min_quality: samples of lower ``face.quality.score`` are not used.
        refresh_seconds: after a track's identity is confirmed, embed it again at most this often.
    """

    threshold: float | None = None
    margin: float | None = None
    confirm_frames: int = 3
    max_samples: int = 8
    min_quality: float = 0.25
    refresh_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.confirm_frames < 1:
            raise ConfigError(f"IdentityConfig: confirm_frames must be >= 1, got {self.confirm_frames}")
        if self.max_samples < 1:
            raise ConfigError(f"IdentityConfig: max_samples must be >= 1, got {self.max_samples}")


@dataclass
class TrackIdentity:
    """The identity state of one track.

    Args:
        threshold: resolved match threshold.
        margin: resolved runner-up margin.
        config: the rest of the rules.

    Attributes:
        samples: ``(embedding, quality, time)`` kept, at most ``config.max_samples``.
        decision: latest :class:`Decision`.
        confirmed: the confirmed :class:`Decision`, or ``None`` while pending.
        conflict: two different people were confirmed on this track.
        history: every confirmed person id in order (``None`` for unknown).
    """

    threshold: float
    margin: float
    config: IdentityConfig = field(default_factory=IdentityConfig)
    samples: list[tuple[np.ndarray, float, float]] = field(default_factory=list)
    decision: Decision | None = None
    confirmed: Decision | None = None
    conflict: bool = False
    history: list[str | None] = field(default_factory=list)
    streak: int = 0
    last_sample_time: float | None = None
    _other: str | None = None
    _other_streak: int = 0

    @property
    def status(self) -> str:
        """``"pending"``, ``"matched"``, ``"unknown"`` or ``"conflict"``."""
        if self.conflict:
            return "conflict"
        if self.confirmed is None:
            return "pending"
        return "unknown" if self.confirmed.person_id is None else "matched"

    def template(self) -> np.ndarray | None:
        """``(d,)`` quality-weighted mean of the normalised samples, normalised; ``None`` without samples."""
        if not self.samples:
            return None
        embs = np.stack([s[0] for s in self.samples])
        weights = np.array([max(s[1], 1e-3) for s in self.samples], dtype=np.float32)
        return normalize((weights[:, None] * embs).sum(axis=0))

    def wants_sample(self, time: float) -> bool:
        """Whether embedding this track now is useful (pending, or due for a refresh)."""
        if self.confirmed is None or self.last_sample_time is None:
            return True
        return time - self.last_sample_time >= self.config.refresh_seconds

    def add_sample(self, embedding: np.ndarray, quality: float, time: float, matcher: Matcher) -> Decision | None:
        """Add one embedding; re-match the template; returns the new decision (``None`` if the sample was too poor)."""
        if quality < self.config.min_quality or embedding is None or not np.isfinite(embedding).all():
            return None
        self.last_sample_time = time
        new = normalize(np.asarray(embedding, dtype=np.float32).reshape(-1))
        self.samples.append((new, float(quality), float(time)))
        if len(self.samples) > self.config.max_samples:
            worst = min(range(len(self.samples)), key=lambda i: (self.samples[i][1], self.samples[i][2]))
            self.samples.pop(worst)
        pooled, alone = matcher.search(np.stack([self.template(), new]), top_k=2)
        decision = self.observe(decide(pooled, self.threshold, self.margin))
        self._check_sample(decide(alone, self.threshold, self.margin))
        return decision

    def _check_sample(self, single: Decision) -> None:
        # The template keeps the best samples, so it can stay on the first person after the
        # tracker has switched to another face; samples that on their own name another person,
        # ``confirm_frames`` times in a row, reveal it.
        confirmed = None if self.confirmed is None else self.confirmed.person_id
        if single.person_id is not None and confirmed is not None and single.person_id != confirmed:
            self._other_streak = self._other_streak + 1 if single.person_id == self._other else 1
            self._other = single.person_id
            if self._other_streak >= self.config.confirm_frames and not self.conflict:
                self.conflict = True
                self.history.append(single.person_id)
        else:
            self._other_streak, self._other = 0, None

    def observe(self, decision: Decision) -> Decision:
        """Count one decision towards confirmation (also used for sightings without a matcher)."""
        if self.decision is not None and self.decision.key == decision.key:
            self.streak += 1
        else:
            self.streak = 1
        self.decision = decision
        if self.streak >= self.config.confirm_frames:
            previous = self.confirmed
            if previous is None or previous.key != decision.key:
                if previous is not None and previous.person_id is not None and decision.person_id is not None:
                    self.conflict = True
                self.history.append(decision.key)
            self.confirmed = decision
        return decision

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: status, person, score, samples."""
        c = self.confirmed
        return {
            "status": self.status,
            "person_id": None if c is None else c.person_id,
            "name": None if c is None else c.name,
            "score": None if c is None or c.score is None else round(float(c.score), 4),
            "samples": len(self.samples),
        }


def resolve_rules(
    config: IdentityConfig, matcher: Matcher | None, fallback_threshold: float | None
) -> tuple[float, float]:
    """``(threshold, margin)`` from the config, then the matcher, then the recogniser's threshold.

    Raises:
        ConfigError: no threshold can be found.
    """
    threshold = config.threshold
    if threshold is None and matcher is not None:
        threshold = getattr(matcher, "threshold", None)
    if threshold is None:
        threshold = fallback_threshold
    if threshold is None:
        raise ConfigError("no match threshold: give IdentityConfig(threshold=...) (the recogniser's card has none)")
    margin = default_margin(threshold) if config.margin is None else float(config.margin)
    return float(threshold), margin


def names_of(matcher: Matcher | None, people: Iterable[str]) -> list[str]:
    """Turn person ids or names given by a user into the matcher's person ids.

    A matcher with ``resolve(person)`` (:class:`GalleryMatcher`) resolves them itself; with a
    ``names`` mapping (:class:`ReferenceMatcher`) a name is accepted for its id when unique; other
    matchers get the ids unchanged.

    Raises:
        ConfigError: a person is not known.
    """
    people = list(people)
    resolve = getattr(matcher, "resolve", None)
    if resolve is not None:
        return [resolve(p) for p in people]
    names = getattr(matcher, "names", None)
    if names is None:
        return people
    out = []
    for p in people:
        if p in names:
            out.append(p)
            continue
        ids = [pid for pid, name in names.items() if name == p]
        if len(ids) != 1:
            known = ", ".join(sorted(names))
            raise ConfigError(f"person {p!r} is not in the references ({known})")
        out.append(ids[0])
    return out
