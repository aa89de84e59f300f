"""facelab's ByteTrack-style face tracker: Kalman boxes, two-stage IoU association, stable ids.

The association follows ByteTrack (Zhang et al., ECCV 2022; ifzhang/ByteTrack, MIT), written for
faces with numpy and :func:`scipy.optimize.linear_sum_assignment`:

1. detections split into *high* (``score >= track_thresh``) and *low*
   (``low_thresh <= score < track_thresh``);
2. every track is predicted one frame ahead by :class:`~facelab.track.kalman.BoxKalman`;
3. confirmed tracks (tracked and lost) are matched to high detections on ``1 - IoU`` (times the
   detection score when ``fuse_score``), gate ``match_thresh``;
4. still-unmatched *tracked* tracks are matched to low detections, gate ``low_match_thresh``;
   tracks left over become lost;
5. tracks born on the previous detection frame (unconfirmed) are matched to the remaining high
   detections, gate ``unconfirmed_match_thresh``; an unmatched one is dropped;
6. remaining high detections with ``score >= new_track_thresh`` start tracks;
7. a lost track is removed after ``max_time_lost = int(frame_rate / 30 * track_buffer)`` frames;
8. a tracked/lost pair closer than ``duplicate_thresh`` in IoU distance keeps only the longer track
   (with the appearance gate on, not when their embeddings say they are two people).

Face-specific additions: an optional appearance gate (a detection whose embedding has cosine
similarity below ``appearance_thresh`` with a track's running embedding cannot join that track),
one-to-one detection ↔ track indices (:attr:`Track.det_index`), no pedestrian aspect filter, and
:meth:`FaceTracker.predict` for frames without detection (``--detect-every N``): tracks move on
their Kalman prediction and the lost-track clock keeps counting video frames.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from facelab.errors import ConfigError
from facelab.ops.boxes import iou_matrix
from facelab.ops.redact import scale_boxes
from facelab.recognition.compare import normalize, similarity_matrix
from facelab.track.kalman import BoxKalman, xyah_to_xyxy, xyxy_to_xyah

__all__ = ["TrackerConfig", "Track", "FaceTracker", "TRACKED", "LOST", "REMOVED"]

TRACKED, LOST, REMOVED = "tracked", "lost", "removed"

#: Cost given to forbidden pairs before the assignment (any value above every gate works).
_BLOCKED = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds; the defaults are ByteTrack's demo settings (``tools/demo_track.py``).

    Scores are in the detector's own units, so :meth:`for_detector` derives them from a detector's
    threshold.

    Attributes:
        track_thresh: detections at or above this are *high* (first association, track births).
        low_thresh: detections from here up to ``track_thresh`` are *low* (second association
            only); lower ones are ignored.
        new_track_thresh: a high detection left unmatched starts a track from this score;
            ``None`` means ``track_thresh + 0.1`` (ByteTrack's ``det_thresh``).
        match_thresh: gate (IoU distance) of the first association.
        low_match_thresh: gate of the second association (ByteTrack: 0.5).
        unconfirmed_match_thresh: gate for tracks born on the previous detection frame (0.7).
        track_buffer: frames a lost track is kept at 30 fps (scaled by ``frame_rate``).
        frame_rate: video frames per second.
        fuse_score: multiply IoU similarity by the detection score in the first association
            (ByteTrack's ``fuse_score``, on except for MOT20).
        appearance_thresh: cosine similarity below which a detection cannot join a track, when
            both have embeddings; ``None`` turns the gate off.
        appearance_momentum: weight of the old value in the track's running embedding.
        duplicate_thresh: tracked/lost pairs closer than this IoU distance are merged.
        iou_buffer: for association, both boxes of a pair are widened by this fraction of their
            size per frame the track went undetected (at most ``max_iou_buffer``): the buffered
            IoU of C-BIoU (Yang et al., WACV 2023), which keeps fast faces matched when the
            detector runs every few frames. 0 = ByteTrack's plain IoU.
        max_iou_buffer: cap of the widening.
    """

    track_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float | None = None
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    track_buffer: int = 30
    frame_rate: float = 30.0
    fuse_score: bool = True
    appearance_thresh: float | None = None
    appearance_momentum: float = 0.9
    duplicate_thresh: float = 0.15
    iou_buffer: float = 0.0
    max_iou_buffer: float = 0.5

    def __post_init__(self) -> None:
        if self.low_thresh > self.track_thresh:
            raise ConfigError(f"TrackerConfig: low_thresh {self.low_thresh} is above track_thresh {self.track_thresh}")
        if not self.frame_rate > 0:
            raise ConfigError(f"TrackerConfig: frame_rate must be positive, got {self.frame_rate}")
        if self.track_buffer < 0:
            raise ConfigError(f"TrackerConfig: track_buffer must be >= 0, got {self.track_buffer}")
        for name in ("match_thresh", "low_match_thresh", "unconfirmed_match_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"TrackerConfig: {name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def birth_thresh(self) -> float:
        """Score from which an unmatched high detection starts a track."""
        return self.track_thresh + 0.1 if self.new_track_thresh is None else self.new_track_thresh

    @property
    def max_time_lost(self) -> int:
        """Frames a lost track survives: ``int(frame_rate / 30 * track_buffer)`` (ByteTrack)."""
        return int(self.frame_rate / 30.0 * self.track_buffer)

    @classmethod
    def for_detector(cls, det_thresh: float, frame_rate: float = 30.0, **overrides: object) -> TrackerConfig:
        """Thresholds placed around a detector's own score threshold.

        ``track_thresh = new_track_thresh = det_thresh`` (what the detector alone would report
        starts a track) and ``low_thresh = det_thresh - 0.4`` (ByteTrack's 0.5 → 0.1 gap). ByteTrack
        starts tracks only from ``track_thresh + 0.1``; facelab does not, because a detector
        thresholded at 0.9 (YuNet) scores most faces 0.90–0.95 and would start almost no track, and
        the unconfirmed stage (a new track needs a second detection) already drops one-frame
        false positives. Association uses a buffered IoU (``iou_buffer=0.1`` per undetected frame).
        """
        base = cls(
            track_thresh=float(det_thresh),
            low_thresh=float(det_thresh) - 0.4,
            new_track_thresh=float(det_thresh),
            frame_rate=float(frame_rate),
            iou_buffer=0.1,
        )
        return replace(base, **overrides) if overrides else base


@dataclass
class Track:
    """One face track.

    Attributes:
        track_id: stable id, counting from 1 in each :class:`FaceTracker`.
        mean: ``(8,)`` Kalman state ``[cx, cy, w/h, h, velocities]``.
        cov: ``(8, 8)`` state covariance.
        score: score of the last matched detection.
        state: ``"tracked"``, ``"lost"`` or ``"removed"``.
        confirmed: matched on at least two detection frames (or born on the first frame).
        start_frame: frame index (0-based, as counted by the tracker) of the first detection.
        last_frame: frame index of the last matched detection.
        hits: number of matched detections.
        det_index: index of the detection matched on the current frame in the arrays given to
            :meth:`FaceTracker.update`, or ``-1`` (predicted, or a frame without detection).
        det_box: ``(4,)`` ``[x1, y1, x2, y2]`` of the last matched detection (unfiltered).
        feature: ``(D,)`` running L2-normalised embedding, or ``None``.
    """

    track_id: int
    mean: np.ndarray
    cov: np.ndarray
    score: float
    state: str = TRACKED
    confirmed: bool = False
    start_frame: int = 0
    last_frame: int = 0
    hits: int = 1
    det_index: int = -1
    det_box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    feature: np.ndarray | None = None

    @property
    def box(self) -> np.ndarray:
        """``(4,)`` ``float32`` ``[x1, y1, x2, y2]``: the detection on a matched frame, else the Kalman estimate."""
        if self.det_index >= 0:
            return self.det_box.astype(np.float32)
        return xyah_to_xyxy(self.mean[None, :4])[0].astype(np.float32)

    @property
    def predicted(self) -> bool:
        """True when the current box comes from the motion model, not a detection."""
        return self.det_index < 0

    def frames_since_seen(self, frame: int) -> int:
        """Frames between ``frame`` and the last matched detection."""
        return frame - self.last_frame


def linear_assignment(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost one-to-one matching with a gate (Hungarian algorithm, SciPy).

    Args:
        cost: ``(N, M)`` costs; entries above ``thresh`` (or infinite) never match.
        thresh: largest cost of an accepted pair.

    Returns:
        ``(matches, unmatched_rows, unmatched_cols)``; matches are ``(row, col)`` pairs.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as exc:  # pragma: no cover - scipy ships with the video extra
        raise ConfigError("the face tracker needs SciPy: pip install 'facelab[video]'") from exc
    gated = np.where(np.isfinite(cost) & (cost <= thresh), cost, _BLOCKED)
    rows, cols = linear_sum_assignment(gated)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if gated[r, c] <= thresh]
    used_r = {r for r, _ in matches}
    used_c = {c for _, c in matches}
    return matches, [r for r in range(n) if r not in used_r], [c for c in range(m) if c not in used_c]


class FaceTracker:
    """Track faces over video frames.

    Call :meth:`update` on frames with detections and :meth:`predict` on the others, once per
    video frame, in order.

    Args:
        config: thresholds (see :class:`TrackerConfig`).

    Example:
        >>> tracker = FaceTracker(TrackerConfig(frame_rate=25))
        >>> boxes = np.array([[10.0, 10.0, 50.0, 60.0]])
        >>> [t.track_id for t in tracker.update(boxes, np.array([0.9]))]
        [1]
        >>> [t.track_id for t in tracker.update(boxes + 2, np.array([0.9]))]
        [1]
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.kalman = BoxKalman()
        self.frame = -1
        self.tracked: list[Track] = []
        self.lost: list[Track] = []
        self._ids = itertools.count(1)

    # -- public -------------------------------------------------------------------------------
    @property
    def active(self) -> list[Track]:
        """Confirmed tracks in the ``tracked`` state (what ByteTrack outputs)."""
        return [t for t in self.tracked if t.confirmed]

    def predict(self) -> list[Track]:
        """Advance one frame without detections; returns the tracks (tracked, then lost) with predicted boxes."""
        self.frame += 1
        self._predict_all()
        self._expire()
        return self.tracked + self.lost

    def update(self, boxes: np.ndarray, scores: np.ndarray, embeddings: np.ndarray | None = None) -> list[Track]:
        """Advance one frame with this frame's detections.

        Args:
            boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` pixels.
            scores: ``(N,)`` detector scores.
            embeddings: optional ``(N, D)`` face embeddings for the appearance gate and the
                running track embedding (rows of NaN, or ``None``, mean "not computed").

        Returns:
            The confirmed tracked tracks after this frame (see :attr:`active`); every track's
            :attr:`Track.det_index` says which detection it took, if any.
        """
        cfg = self.config
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ConfigError(f"FaceTracker.update: {len(boxes)} boxes but {len(scores)} scores")
        feats = None
        if embeddings is not None:
            feats = np.asarray(embeddings, dtype=np.float64).reshape(len(boxes), -1)
        self.frame += 1
        self._predict_all()

        high = np.nonzero(scores >= cfg.track_thresh)[0]
        low = np.nonzero((scores >= cfg.low_thresh) & (scores < cfg.track_thresh))[0]
        confirmed = [t for t in self.tracked if t.confirmed]
        unconfirmed = [t for t in self.tracked if not t.confirmed]
        pool = confirmed + self.lost

        # 1. confirmed (tracked + lost) tracks vs high detections
        cost = self._cost(pool, boxes[high], scores[high] if cfg.fuse_score else None, feats, high)
        matches, rest_tracks, rest_high = linear_assignment(cost, cfg.match_thresh)
        self._match([(pool[ti], high[di]) for ti, di in matches], boxes, scores, feats)
        # 2. the remaining *tracked* tracks vs low detections
        remaining = [pool[i] for i in rest_tracks if pool[i].state == TRACKED]
        cost = self._cost(remaining, boxes[low], None, feats, low)
        matches, rest_tracked, _ = linear_assignment(cost, cfg.low_match_thresh)
        self._match([(remaining[ti], low[di]) for ti, di in matches], boxes, scores, feats)
        for i in rest_tracked:
            remaining[i].state = LOST
        # 3. tracks born on the last detection frame vs the high detections left
        left_high = high[rest_high]
        cost = self._cost(
            unconfirmed, boxes[left_high], scores[left_high] if cfg.fuse_score else None, feats, left_high
        )
        matches, rest_unconf, rest_new = linear_assignment(cost, cfg.unconfirmed_match_thresh)
        self._match([(unconfirmed[ti], left_high[di]) for ti, di in matches], boxes, scores, feats)
        for i in rest_unconf:
            unconfirmed[i].state = REMOVED
        # 4. births
        for di in left_high[rest_new]:
            if scores[di] >= cfg.birth_thresh:
                self._birth(int(di), boxes, scores, feats)
        # 5. bookkeeping
        everyone = self.tracked + self.lost
        self.tracked = [t for t in everyone if t.state == TRACKED]  # re-found lost tracks come back here
        self.lost = [t for t in everyone if t.state == LOST]
        self._expire()
        self._remove_duplicates()
        return self.active

    def reset(self) -> None:
        """Forget every track (e.g. after a scene cut); ids keep counting."""
        self.tracked, self.lost = [], []

    # -- internals ----------------------------------------------------------------------------
    def _predict_all(self) -> None:
        tracks = self.tracked + self.lost
        for t in tracks:
            t.det_index = -1
        if not tracks:
            return
        mean = np.stack([t.mean for t in tracks])
        cov = np.stack([t.cov for t in tracks])
        for i, t in enumerate(tracks):
            if t.state != TRACKED:
                mean[i, 7] = 0.0  # ByteTrack: a lost track's height stops changing
        mean, cov = self.kalman.predict(mean, cov)
        for i, t in enumerate(tracks):
            t.mean, t.cov = mean[i], cov[i]

    def _cost(
        self,
        tracks: list[Track],
        det_boxes: np.ndarray,
        det_scores: np.ndarray | None,
        feats: np.ndarray | None,
        det_idx: np.ndarray,
    ) -> np.ndarray:
        if not tracks or len(det_boxes) == 0:
            return np.zeros((len(tracks), len(det_boxes)))
        track_boxes = xyah_to_xyxy(np.stack([t.mean[:4] for t in tracks]))
        buffer = self.config.iou_buffer
        if buffer > 0:
            sim = np.empty((len(tracks), len(det_boxes)))
            unseen = np.array([max(self.frame - t.last_frame, 1) for t in tracks])
            grows = 1.0 + 2.0 * np.minimum(buffer * unseen, self.config.max_iou_buffer)
            for grow in np.unique(grows):  # tracks unseen for as long share a widening: one IoU matrix for them
                rows = grows == grow
                sim[rows] = iou_matrix(scale_boxes(track_boxes[rows], grow), scale_boxes(det_boxes, grow))
        else:
            sim = iou_matrix(track_boxes, det_boxes)
        if det_scores is not None:
            sim = sim * det_scores[None, :]
        cost = 1.0 - sim
        gate = self.config.appearance_thresh
        if gate is not None and feats is not None:
            det_feats = feats[det_idx]
            has_det = np.all(np.isfinite(det_feats), axis=1)
            for i, t in enumerate(tracks):
                if t.feature is None:
                    continue
                cos = np.full(len(det_idx), 1.0)
                if has_det.any():
                    cos[has_det] = similarity_matrix(t.feature[None, :], det_feats[has_det])[0]
                cost[i, cos < gate] = np.inf
        return cost

    def _update_feature(self, track: Track, feats: np.ndarray | None, di: int) -> None:
        if feats is None or not np.all(np.isfinite(feats[di])):
            return
        f = normalize(feats[di])
        if track.feature is None:
            track.feature = f
        else:
            m = self.config.appearance_momentum
            track.feature = normalize(m * track.feature + (1 - m) * f)

    def _match(
        self, pairs: list[tuple[Track, int]], boxes: np.ndarray, scores: np.ndarray, feats: np.ndarray | None
    ) -> None:
        """Give each track its detection: one Kalman correction for all the pairs of an association."""
        if not pairs:
            return
        tracks = [t for t, _ in pairs]
        dis = np.array([int(di) for _, di in pairs])
        mean, cov = self.kalman.update(
            np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]), xyxy_to_xyah(boxes[dis])
        )
        for k, (track, di) in enumerate(pairs):
            track.mean, track.cov = mean[k], cov[k]
            track.state = TRACKED
            track.confirmed = True
            track.score = float(scores[di])
            track.last_frame = self.frame
            track.hits += 1
            track.det_index = int(di)
            track.det_box = boxes[di].astype(np.float32)
            self._update_feature(track, feats, di)

    def _birth(self, di: int, boxes: np.ndarray, scores: np.ndarray, feats: np.ndarray | None) -> None:
        mean, cov = self.kalman.initiate(xyxy_to_xyah(boxes[di : di + 1]))
        track = Track(
            track_id=next(self._ids),
            mean=mean[0],
            cov=cov[0],
            score=float(scores[di]),
            confirmed=self.frame == 0,  # ByteTrack: tracks of the first frame count at once
            start_frame=self.frame,
            last_frame=self.frame,
            det_index=di,
            det_box=boxes[di].astype(np.float32),
        )
        self._update_feature(track, feats, di)
        self.tracked.append(track)

    def _expire(self) -> None:
        limit = self.config.max_time_lost
        for t in self.lost:
            if self.frame - t.last_frame > limit:
                t.state = REMOVED
        self.lost = [t for t in self.lost if t.state == LOST]

    def _remove_duplicates(self) -> None:
        if not self.tracked or not self.lost:
            return
        a = xyah_to_xyxy(np.stack([t.mean[:4] for t in self.tracked]))
        b = xyah_to_xyxy(np.stack([t.mean[:4] for t in self.lost]))
        dist = 1.0 - iou_matrix(a, b)
        drop_a, drop_b = set(), set()
        gate = self.config.appearance_thresh
        for p, q in zip(*np.nonzero(dist < self.config.duplicate_thresh)):
            fp, fq = self.tracked[p].feature, self.lost[q].feature
            if gate is not None and fp is not None and fq is not None and float(fp @ fq) < gate:
                continue  # overlapping boxes of two people the appearance gate tells apart: not a duplicate
            age_p = self.tracked[p].last_frame - self.tracked[p].start_frame
            age_q = self.lost[q].last_frame - self.lost[q].start_frame
            if age_p > age_q:
                drop_b.add(int(q))
            else:
                drop_a.add(int(p))
        for i in drop_a:
            self.tracked[i].state = REMOVED
        for i in drop_b:
            self.lost[i].state = REMOVED
        self.tracked = [t for i, t in enumerate(self.tracked) if i not in drop_a]
        self.lost = [t for i, t in enumerate(self.lost) if i not in drop_b]
