"""Plan which boxes to hide on every frame of a whole video, from the tracks' detections.

Knowing the whole video (two passes: analyse, then render) lets the masks cover more than the
detector saw:

* between two detections of a track, its box is interpolated linearly (PrivateFrame's
  ``between_scan_frames: interpolate``), so ``--detect-every N`` and short detector misses leave
  no gap;
* before a track's first detection, its box is extrapolated backwards for ``lookback`` seconds
  (at least the ``detect_every - 1`` frames the detector skipped), with the velocity of its first
  two detections (clamped): a face that appears is hidden before the detector first finds it
  (PrivateFrame's ``max_retroactive_seconds``); a first box touching the frame border (a face
  entering) is instead held still and extended across that border;
* after its last detection, it is extrapolated forwards for ``hold`` seconds (at least
  ``detect_every - 1`` frames), the same way (a face leaving across a border);
* a box away from a detection grows by ``growth`` of its size per frame (up to ``max_growth``),
  the safety margin for motion the model does not predict;
* nothing is carried across a scene cut (a cut found on a detection frame may have happened on
  any frame since the previous one: both shots' masks cover those frames);
* a box cut by the frame border that is narrower than a face (``BORDER_ASPECT``) is widened
  inwards: detectors' boxes of half-visible faces often stop short of the visible part;
* confident detections that belong to no track get the same treatment as a one-frame track.

The result is a list of :class:`MaskBox` per frame; ``mask_scale`` is applied later, when drawing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.ops.redact import scale_boxes

__all__ = ["MaskPlanConfig", "MaskBox", "plan_masks", "should_mask", "BORDER_ASPECT"]


@dataclass(frozen=True)
class MaskPlanConfig:
    """How far masks reach beyond the detections.

    Attributes:
        lookback: seconds a track is extended before its first detection.
        hold: seconds a track is extended after its last detection.
        growth: box growth per frame away from the nearest detection (fraction of its size).
        max_growth: largest total growth.
    """

    lookback: float = 0.5
    hold: float = 0.5
    growth: float = 0.05
    max_growth: float = 0.5

    def __post_init__(self) -> None:
        for name in ("lookback", "hold", "growth", "max_growth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"MaskPlanConfig: {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class MaskBox:
    """One box to hide on one frame.

    Attributes:
        track_id: the track it belongs to, or ``None`` for an untracked detection.
        box: ``(x1, y1, x2, y2)`` pixels, before ``mask_scale``.
        source: ``"detected"``, ``"interpolated"``, ``"lookback"``, ``"hold"`` or ``"untracked"``.
    """

    track_id: int | None
    box: tuple[float, float, float, float]
    source: str


def _grow(box: np.ndarray, factor: float) -> np.ndarray:
    return scale_boxes(box, factor)[0]


def _velocity(obs: list[tuple[int, np.ndarray]], first: bool, max_span: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(centre velocity (2,), size velocity (2,))`` from the first or last two detections, clamped."""
    zero = (np.zeros(2), np.zeros(2))
    if len(obs) < 2:
        return zero
    (fa, ba), (fb, bb) = (obs[0], obs[1]) if first else (obs[-2], obs[-1])
    if fb - fa > max_span:
        return zero
    ba, bb = np.asarray(ba, np.float64), np.asarray(bb, np.float64)
    size = np.maximum((ba[2:] - ba[:2] + bb[2:] - bb[:2]) / 2, 1.0)
    vc = ((bb[:2] + bb[2:]) - (ba[:2] + ba[2:])) / 2 / (fb - fa)
    vs = ((bb[2:] - bb[:2]) - (ba[2:] - ba[:2])) / (fb - fa)
    # a noisy detection must not fling the box away: at most 1/4 of the size per frame, 5 % growth
    return np.clip(vc, -0.25 * size, 0.25 * size), np.clip(vs, -0.05 * size, 0.05 * size)


def _moved(box: np.ndarray, v: tuple[np.ndarray, np.ndarray], d: float) -> np.ndarray:
    c = (box[:2] + box[2:]) / 2 + v[0] * d
    half = np.maximum((box[2:] - box[:2]) + v[1] * d, 1.0) / 2
    return np.concatenate([c - half, c + half])


#: Narrowest face box, as width / height, across a left or right border (and height / width
#: across the top or bottom): a detector's box of a face cut by the frame border often stops
#: short of the visible part, so such a box is widened inwards to this aspect.
BORDER_ASPECT = 0.75


def _complete_at_border(box: np.ndarray, size: tuple[int, int] | None, margin: float = 2.0) -> np.ndarray:
    if size is None:
        return box
    w, h = size
    out = np.asarray(box, dtype=np.float64).copy()
    bw, bh = out[2] - out[0], out[3] - out[1]
    if bw < BORDER_ASPECT * bh:
        if out[2] >= w - margin:
            out[0] = out[2] - BORDER_ASPECT * bh
        elif out[0] <= margin:
            out[2] = out[0] + BORDER_ASPECT * bh
    if bh < BORDER_ASPECT * bw:
        if out[3] >= h - margin:
            out[1] = out[3] - BORDER_ASPECT * bw
        elif out[1] <= margin:
            out[3] = out[1] + BORDER_ASPECT * bw
    return out


def _to_edges(box: np.ndarray, size: tuple[int, int] | None, margin: float = 2.0) -> tuple[bool, np.ndarray]:
    """A box touching the frame's border: a face entering or leaving. Extend it across that border."""
    if size is None:
        return False, box
    w, h = size
    out = box.copy()
    touched = False
    bw, bh = box[2] - box[0], box[3] - box[1]
    if box[0] <= margin:
        out[0], touched = -bw, True
    if box[1] <= margin:
        out[1], touched = -bh, True
    if box[2] >= w - margin:
        out[2], touched = w + bw, True
    if box[3] >= h - margin:
        out[3], touched = h + bh, True
    return touched, out


def plan_masks(
    frames: int,
    tracks: dict[int, list[tuple[int, np.ndarray]]],
    untracked: dict[int, list[np.ndarray]] | None = None,
    *,
    fps: float,
    detect_every: int = 1,
    size: tuple[int, int] | None = None,
    cuts: list[int] | None = None,
    detect_frames: list[int] | None = None,
    config: MaskPlanConfig | None = None,
) -> list[list[MaskBox]]:
    """Boxes to hide on each frame.

    Args:
        frames: number of frames in the video.
        tracks: ``{track_id: [(frame, (4,) box), ...]}`` detections per track (any order).
        untracked: ``{frame: [box, ...]}`` confident detections outside every track.
        fps: frame rate (converts ``lookback``/``hold`` to frames).
        detect_every: the detection period used.
        size: ``(width, height)`` to clip boxes to; ``None`` = no clipping.
        cuts: frames on which a new shot was detected.
        detect_frames: frames on which the detector ran (to place cuts between them).
        config: reach of the masks.

    Returns:
        ``frames`` lists of :class:`MaskBox`.
    """
    cfg = config or MaskPlanConfig()
    back = max(detect_every - 1, int(round(cfg.lookback * fps)))
    ahead = max(detect_every - 1, int(round(cfg.hold * fps)))
    max_span = 4 * detect_every + 1
    cuts = sorted(cuts or [])
    det_frames = sorted(detect_frames or [])
    # A cut found at detection frame c happened somewhere after the previous detection frame p:
    # frames p+1 .. c-1 may belong to either shot, so the old shot's tracks are held up to c-1
    # and the new shot's tracks reach back to p+1 (both masks cover the uncertain frames).
    cut_starts = []
    for c in cuts:
        i = bisect.bisect_left(det_frames, c)
        cut_starts.append(det_frames[i - 1] + 1 if i > 0 else 0)
    plan: list[list[MaskBox]] = [[] for _ in range(frames)]

    def clip(box: np.ndarray) -> tuple[float, float, float, float] | None:
        box = _complete_at_border(box, size)
        if size is not None:
            w, h = size
            box = np.array([max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])])
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        return tuple(round(float(v), 2) for v in box)

    def put(frame: int, track_id: int | None, box: np.ndarray, source: str) -> None:
        if 0 <= frame < frames:
            b = clip(box)
            if b is not None:
                plan[frame].append(MaskBox(track_id, b, source))

    def factor(d: int) -> float:
        return 1.0 + min(cfg.growth * d, cfg.max_growth)

    def extend(track_id: int | None, obs: list[tuple[int, np.ndarray]], first_source: str) -> None:
        obs = sorted(
            ((int(f), _complete_at_border(np.asarray(b, np.float64), size)) for f, b in obs), key=lambda o: o[0]
        )
        for k, (f, b) in enumerate(obs):
            put(f, track_id, b, first_source)
            if k + 1 < len(obs):
                fb, bb = obs[k + 1]
                for g in range(f + 1, fb):
                    t = (g - f) / (fb - f)
                    put(g, track_id, _grow((1 - t) * b + t * bb, factor(min(g - f, fb - g))), "interpolated")
        f0, b0 = obs[0]
        floor = max([s for s, c in zip(cut_starts, cuts) if c <= f0] or [0])
        v0 = _velocity(obs, True, max_span)
        # a face cut by the frame border is entering or leaving: its earlier (later) visible part
        # lies between the box and that border, so the box is held still and extended to it
        edge0, wide0 = _to_edges(b0, size)
        for d in range(1, back + 1):
            if f0 - d < floor:
                break
            put(f0 - d, track_id, _grow(wide0 if edge0 else _moved(b0, v0, -d), factor(d)), "lookback")
        f1, b1 = obs[-1]
        later = [c for c in cuts if c > f1]
        ceiling = min(later) - 1 if later else frames - 1
        v1 = _velocity(obs, False, max_span)
        edge1, wide1 = _to_edges(b1, size)
        for d in range(1, ahead + 1):
            if f1 + d > ceiling:
                break
            put(f1 + d, track_id, _grow(wide1 if edge1 else _moved(b1, v1, d), factor(d)), "hold")

    for track_id, obs in sorted(tracks.items()):
        if obs:
            extend(track_id, list(obs), "detected")
    for frame, boxes in sorted((untracked or {}).items()):
        for b in boxes:
            extend(None, [(frame, b)], "untracked")
    return plan


def should_mask(identity: Any | None, keep: Sequence[str] = (), only: Sequence[str] = ()) -> bool:
    """Whether a track is hidden, from its whole-track identity.

    Args:
        identity: the track's :class:`~facelab.track.identity.TrackIdentity` (``None`` for an
            untracked detection).
        keep: person ids left visible (``--except``): a track is visible only when its identity is
            confirmed as one of them and never conflicted.
        only: person ids to hide (``--only``): a track is hidden when confirmed as one of them, and
            also while it is uncertain (pending or conflict) — any doubt stays hidden.

    Returns:
        ``True`` to hide the track. With neither list, every track is hidden.
    """
    if keep and only:
        raise ConfigError("give people to keep visible or people to hide, not both")
    status = "pending" if identity is None else identity.status
    person = None if identity is None or identity.confirmed is None else identity.confirmed.person_id
    if keep:
        return not (status == "matched" and person in set(keep))
    if only:
        return status in ("pending", "conflict") or (status == "matched" and person in set(only))
    return True
