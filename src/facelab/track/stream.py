"""``VideoAnalyzer``: faces of a video frame by frame — detection every N frames, tracks, identities, events.

For each frame (a ``(H, W, 3)`` ``uint8`` BGR image and its time in seconds) the analyser

1. runs the detector on every ``detect_every``-th frame, at a threshold ``0.4`` below the
   detector's own (ByteTrack's low-score detections; see
   :meth:`~facelab.track.bytetrack.TrackerConfig.for_detector`), and the tracker's Kalman
   prediction on the frames in between;
2. on detection frames, measures face quality (:func:`facelab.attributes.quality.face_quality`)
   of each tracked face and, with a matcher, embeds the tracks whose identity is pending or due for
   a refresh (:class:`~facelab.track.identity.TrackIdentity`);
3. turns confirmed identities into enter/exit events (:class:`~facelab.track.events.PresenceMonitor`);
4. drops every track after a scene cut (:func:`content_change` between detection frames).

It also keeps a log of each track's detected boxes (:attr:`VideoAnalyzer.log`) from which
:func:`facelab.track.plan.plan_masks` plans anonymisation masks for a whole file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelab.attributes.quality import face_quality
from facelab.errors import ConfigError, ImageError
from facelab.structures import Detections
from facelab.track.bytetrack import LOST, FaceTracker, Track, TrackerConfig
from facelab.track.events import EventPolicy, PresenceEvent, PresenceMonitor, Sighting
from facelab.track.identity import UNKNOWN, IdentityConfig, Matcher, TrackIdentity, resolve_rules

__all__ = ["TrackedFace", "FrameResult", "TrackSummary", "TrackLog", "VideoAnalyzer", "is_scene_cut", "content_change"]

_logger = logging.getLogger(__name__)

#: Mean HSV difference (0-255 scale) between two frames from which a cut is declared: the
#: default ``threshold`` of PySceneDetect's ``ContentDetector`` (27.0).
CUT_THRESHOLD = 27.0

#: Longest side of the per-track best-face thumbnail, pixels.
THUMBNAIL_SIDE = 128


def _hsv_thumb(image: np.ndarray) -> np.ndarray:
    import cv2

    small = cv2.resize(image, (96, 54), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2HSV).astype(np.float32)


def content_change(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean of the per-pixel hue (circular, rescaled to 0-255), saturation and value differences of two BGR frames.

    Both are shrunk to 96x54 first. A cut scores tens; motion within a shot, a few to about 15.
    """
    return _thumb_change(_hsv_thumb(previous), _hsv_thumb(current))


def _thumb_change(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`content_change` of two :func:`_hsv_thumb` results."""
    dh = np.abs(a[..., 0] - b[..., 0])
    dh = np.minimum(dh, 180.0 - dh) * (255.0 / 180.0)
    return float((dh.mean() + np.abs(a[..., 1] - b[..., 1]).mean() + np.abs(a[..., 2] - b[..., 2]).mean()) / 3.0)


def is_scene_cut(previous: np.ndarray, current: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """Whether two BGR frames belong to different shots (:func:`content_change` at least ``threshold``)."""
    return content_change(previous, current) >= threshold


@dataclass
class TrackedFace:
    """One track on one frame.

    Attributes:
        track_id: stable id of the track.
        box: ``(4,)`` ``float32`` ``[x1, y1, x2, y2]``: the detection when ``state == "detected"``,
            else the motion model's estimate.
        score: detector score of the track's last detection.
        state: ``"detected"`` (matched this frame), ``"predicted"`` (no detection ran, or none
            matched yet) or ``"lost"`` (missed by the detector, kept for a while).
        frames_unseen: frames since the track's last detection.
        identity: :meth:`TrackIdentity.to_dict` of the track, or ``None`` without a matcher.
        quality: face quality of this frame's detection, when measured.
    """

    track_id: int
    box: np.ndarray
    score: float
    state: str
    frames_unseen: int = 0
    identity: dict[str, Any] | None = None
    quality: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (box rounded to 0.1 px)."""
        out: dict[str, Any] = {
            "track_id": self.track_id,
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "state": self.state,
        }
        if self.frames_unseen:
            out["frames_unseen"] = self.frames_unseen
        if self.quality is not None:
            out["quality"] = round(float(self.quality), 4)
        if self.identity is not None:
            out["identity"] = self.identity
        return out


@dataclass
class FrameResult:
    """What :meth:`VideoAnalyzer.process` found on one frame.

    Attributes:
        index: 0-based frame number.
        time: seconds (the frame's timestamp).
        detected: whether the detector ran on this frame.
        faces: every live track (tracked, then lost).
        untracked: ``(K, 4)`` boxes of confident detections that belong to no track (yet).
        events: enter/exit events decided on this frame.
        cut: a scene cut was detected just before this frame.
    """

    index: int
    time: float
    detected: bool
    faces: list[TrackedFace]
    untracked: np.ndarray
    events: list[PresenceEvent] = field(default_factory=list)
    cut: bool = False

    def mask_boxes(self, include_lost: bool = True) -> np.ndarray:
        """``(M, 4)`` boxes to hide on this frame when there is no look-ahead (live anonymisation)."""
        boxes = [f.box for f in self.faces if include_lost or f.state != "lost"]
        if len(self.untracked):
            boxes.extend(self.untracked)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (one JSON Lines record of ``facelab video analyze``)."""
        out: dict[str, Any] = {
            "frame": self.index,
            "time": round(float(self.time), 6),
            "detected": self.detected,
            "faces": [f.to_dict() for f in self.faces],
        }
        if len(self.untracked):
            out["untracked"] = [[round(float(v), 1) for v in b] for b in self.untracked]
        if self.events:
            out["events"] = [e.to_dict() for e in self.events]
        if self.cut:
            out["cut"] = True
        return out


@dataclass
class TrackSummary:
    """A whole track: when it was seen, who it is, its best frame.

    Attributes:
        track_id: the track's id.
        first_frame: first frame with a detection.
        last_frame: last frame with a detection.
        first_time: seconds at ``first_frame``.
        last_time: seconds at ``last_frame``.
        detections: frames on which the track was detected.
        identity: :class:`~facelab.track.identity.TrackIdentity` (``None`` until first seen).
        best_quality: highest face quality seen.
        best_frame: frame of that face.
        best_box: ``(4,)`` box of that face.
        thumbnail: BGR crop of that face (longest side at most 128 px), or ``None``.
    """

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    detections: int = 0
    identity: TrackIdentity | None = None
    best_quality: float = -1.0
    best_frame: int = -1
    best_box: np.ndarray | None = None
    thumbnail: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict without the thumbnail pixels."""
        out: dict[str, Any] = {
            "track_id": self.track_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": round(self.first_time, 6),
            "last_time": round(self.last_time, 6),
            "detections": self.detections,
            "best_quality": round(self.best_quality, 4),
            "best_frame": self.best_frame,
            "best_box": None if self.best_box is None else [round(float(v), 1) for v in self.best_box],
        }
        if self.identity is not None:
            out["identity"] = self.identity.to_dict()
        return out


@dataclass
class TrackLog:
    """Detections per track and per frame, for planning masks after the whole video is known.

    Attributes:
        tracks: ``{track_id: [(frame, box (4,)), ...]}`` frames on which the track was detected.
        untracked: ``{frame: [box, ...]}`` confident detections outside every track.
        detect_frames: frames on which the detector ran, in order.
        cuts: frames that start a new shot.
        times: every frame's timestamp, in order.
    """

    tracks: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    untracked: dict[int, list[np.ndarray]] = field(default_factory=dict)
    detect_frames: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class VideoAnalyzer:
    """Analyse a video frame by frame with a :class:`~facelab.pipeline.FaceAnalyzer`.

    Args:
        analyzer: the face analyser (its detector, and its recogniser when ``matcher`` is given).
        fps: frame rate, used to scale the lost-track buffer and for frames given without a time.
        detect_every: run the detector on one frame in this many (1 = every frame).
        matcher: who to recognise (:class:`~facelab.track.identity.Matcher`); ``None`` = no
            recognition (every face is "unknown").
        identity: per-track identity rules.
        events: enter/exit rules.
        tracker: tracker thresholds; ``None`` = :meth:`TrackerConfig.for_detector` of the
            analyser's detector at ``fps``.
        appearance_gate: cosine similarity below which a face cannot continue a track (embeds every
            confident face on every detection frame); ``None`` = off.
        cut_threshold: :func:`content_change` of a scene cut (``None`` = no cut detection).
        thumbnails: keep a best-face crop per track.

    Example:
        >>> va = VideoAnalyzer(facelab.FaceAnalyzer(), fps=25, detect_every=3)   # doctest: +SKIP
        >>> for image, t in frames:                                               # doctest: +SKIP
        ...     result = va.process(image, t)
        ...     print([(f.track_id, f.state) for f in result.faces])
        >>> events = va.finish()                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        analyzer: Any,
        *,
        fps: float = 30.0,
        detect_every: int = 1,
        matcher: Matcher | None = None,
        identity: IdentityConfig | None = None,
        events: EventPolicy | None = None,
        tracker: TrackerConfig | None = None,
        appearance_gate: float | None = None,
        cut_threshold: float | None = CUT_THRESHOLD,
        thumbnails: bool = True,
    ) -> None:
        if detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        if not fps > 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        if (matcher is not None or appearance_gate is not None) and analyzer.recognizer is None:
            raise ConfigError(f"pack {analyzer.pack_name!r} has no recogniser; faces cannot be matched")
        self.analyzer = analyzer
        self.fps = float(fps)
        self.detect_every = int(detect_every)
        self.matcher = matcher
        self.identity_config = identity or IdentityConfig()
        if matcher is not None:
            self.threshold, self.margin = resolve_rules(self.identity_config, matcher, analyzer.threshold)
        else:
            self.threshold, self.margin = 1.0, 0.0
        det_thresh = float(analyzer.detector.det_thresh)
        config = tracker or TrackerConfig.for_detector(det_thresh, self.fps)
        if appearance_gate is not None:
            from dataclasses import replace

            config = replace(config, appearance_thresh=float(appearance_gate))
        self.tracker = FaceTracker(config)
        self.monitor = PresenceMonitor(events)
        self.cut_threshold = cut_threshold
        self.thumbnails = thumbnails
        self.index = -1
        self.time = 0.0
        self.identities: dict[int, TrackIdentity] = {}
        self.summaries: dict[int, TrackSummary] = {}
        self.log = TrackLog()
        self._last_thumb: tuple[tuple[int, ...], np.ndarray] | None = None  # (frame shape, HSV thumbnail)
        self._finished = False

    # -- public -------------------------------------------------------------------------------
    @property
    def config(self) -> TrackerConfig:
        """The tracker's thresholds."""
        return self.tracker.config

    def process(
        self, image: np.ndarray | None, time: float | None = None, *, detect: bool | None = None
    ) -> FrameResult:
        """Analyse the next frame.

        Args:
            image: ``(H, W, 3)`` ``uint8`` BGR frame (may be ``None`` on a frame without detection).
            time: the frame's timestamp in seconds; ``None`` = ``index / fps``.
            detect: force (``True``) or skip (``False``) detection on this frame; ``None`` follows
                ``detect_every``.

        Returns:
            The frame's tracks, untracked detections and events.
        """
        if self._finished:
            raise ConfigError("VideoAnalyzer.process after finish(); make a new analyser")
        index = self.index + 1
        run = (index % self.detect_every == 0) if detect is None else bool(detect)
        if run and (
            not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
        ):
            raise ImageError(f"expected an (H, W, 3) uint8 BGR frame, got {getattr(image, 'shape', type(image))}")
        self.index = index
        self.time = float(self.index / self.fps if time is None else time)
        self.log.times.append(self.time)
        if not run:
            self.tracker.predict()
            events = self.monitor.update(self.time, [])
            return FrameResult(self.index, self.time, False, self._faces({}, {}), np.zeros((0, 4), np.float32), events)
        cut = False
        if self.cut_threshold is not None:
            # one thumbnail per detection frame: this frame's is the next one's "previous"
            thumb = _hsv_thumb(image)
            last = self._last_thumb
            if last is not None and last[0] == image.shape and _thumb_change(last[1], thumb) >= self.cut_threshold:
                cut = True
                self.tracker.reset()
                self.log.cuts.append(self.index)
            self._last_thumb = (image.shape, thumb)
        self.log.detect_frames.append(self.index)
        dets = self._detect(image)
        embeddings = None
        embedded: dict[int, Any] = {}
        if self.config.appearance_thresh is not None:
            high = [i for i in range(len(dets)) if dets.scores[i] >= self.config.track_thresh]
            embeddings = np.full((len(dets), self._dim()), np.nan, np.float32)
            for i, face in zip(high, self._embed(image, dets, high)):
                embedded[i] = face
                if face.embedding is not None:
                    embeddings[i] = face.embedding
        self.tracker.update(dets.boxes, dets.scores, embeddings)
        matched = [t for t in self.tracker.tracked if t.det_index >= 0]
        qualities = self._identify(image, dets, matched, embedded)
        sightings = []
        for t in matched:
            ident = self.identities[t.track_id]
            c = ident.confirmed
            if ident.conflict or c is None:
                sightings.append(Sighting(t.track_id, False))
            else:
                sightings.append(Sighting(t.track_id, True, c.person_id, c.name, c.score))
        events = self.monitor.update(self.time, sightings)
        taken = {t.det_index for t in matched}
        untracked_idx = [i for i in range(len(dets)) if i not in taken and dets.scores[i] >= self.config.track_thresh]
        untracked = dets.boxes[untracked_idx].astype(np.float32).reshape(-1, 4)
        for t in matched:
            self.log.tracks.setdefault(t.track_id, []).append((self.index, t.det_box.copy()))
        if len(untracked):
            self.log.untracked[self.index] = [b.copy() for b in untracked]
        faces = self._faces(qualities, {t.track_id: t for t in matched})
        return FrameResult(self.index, self.time, True, faces, untracked, events, cut)

    def finish(self, time: float | None = None) -> list[PresenceEvent]:
        """End of the video: exits of every announced track (at ``time``, default the last frame's)."""
        self._finished = True
        return self.monitor.finish(self.time if time is None else float(time))

    def tracks(self) -> list[TrackSummary]:
        """Summaries of every track seen so far, by id."""
        return [self.summaries[k] for k in sorted(self.summaries)]

    # -- internals ----------------------------------------------------------------------------
    def _dim(self) -> int:
        card = self.analyzer.cards.get("recognition")
        dim = getattr(card, "embedding_dim", None) if card is not None else None
        return int(dim or 512)

    def _detect(self, image: np.ndarray) -> Detections:
        detector = self.analyzer.detector
        original = detector.det_thresh
        detector.det_thresh = min(float(original), self.config.low_thresh)
        try:
            return detector.detect_batch([image])[0]
        finally:
            detector.det_thresh = original

    def _embed(self, image: np.ndarray, dets: Detections, index: list[int]) -> list[Any]:
        if not index:
            return []
        return self.analyzer.analyze_detections([image], [dets.select(index)])[0]

    def _identify(
        self, image: np.ndarray, dets: Detections, matched: list[Track], embedded: dict[int, Any]
    ) -> dict[int, float]:
        qualities: dict[int, float] = {}
        for t in matched:
            if t.track_id not in self.identities:
                self.identities[t.track_id] = TrackIdentity(self.threshold, self.margin, self.identity_config)
        need: list[Track] = []
        if self.matcher is not None:
            need = [
                t
                for t in matched
                if dets.scores[t.det_index] >= self.config.track_thresh
                and self.identities[t.track_id].wants_sample(self.time)
                and t.det_index not in embedded
            ]
            for t, face in zip(need, self._embed(image, dets, [t.det_index for t in need])):
                embedded[t.det_index] = face
        for t in matched:
            face = embedded.get(t.det_index)
            if face is not None and face.quality is not None:
                q = float(face.quality.score)
            else:
                kps = None if dets.kps is None else dets.kps[t.det_index]
                q = float(face_quality(image, dets.boxes[t.det_index], kps, float(dets.scores[t.det_index])).score)
            qualities[t.track_id] = q
            ident = self.identities[t.track_id]
            if self.matcher is None:
                ident.observe(UNKNOWN)
            elif face is not None and face.embedding is not None:
                ident.add_sample(face.embedding, q, self.time, self.matcher)
            self._summarise(t, q, image)
        return qualities

    def _summarise(self, t: Track, quality: float, image: np.ndarray) -> None:
        s = self.summaries.get(t.track_id)
        if s is None:
            s = self.summaries[t.track_id] = TrackSummary(t.track_id, self.index, self.index, self.time, self.time)
        s.last_frame, s.last_time = self.index, self.time
        s.detections += 1
        s.identity = self.identities[t.track_id]
        if quality > s.best_quality:
            s.best_quality, s.best_frame, s.best_box = quality, self.index, t.det_box.copy()
            if self.thumbnails:
                s.thumbnail = _crop(image, t.det_box)

    def _faces(self, qualities: dict[int, float], matched: dict[int, Track]) -> list[TrackedFace]:
        out = []
        for t in self.tracker.tracked + self.tracker.lost:
            if t.track_id in matched:
                state = "detected"
            else:
                state = "lost" if t.state == LOST else "predicted"
            ident = self.identities.get(t.track_id)
            out.append(
                TrackedFace(
                    t.track_id,
                    t.box,
                    t.score,
                    state,
                    t.frames_since_seen(self.tracker.frame),
                    None if ident is None or self.matcher is None else ident.to_dict(),
                    qualities.get(t.track_id),
                )
            )
        return out


def _crop(image: np.ndarray, box: np.ndarray, pad: float = 0.2) -> np.ndarray | None:
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    x1, x2 = int(max(0, x1 - pad * bw)), int(min(w, x2 + pad * bw))
    y1, y2 = int(max(0, y1 - pad * bh)), int(min(h, y2 + pad * bh))
    if x2 <= x1 or y2 <= y1:
        return None
    crop = image[y1:y2, x1:x2]
    scale = THUMBNAIL_SIDE / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
    return np.ascontiguousarray(crop)
