"""The editable boxes file of ``facelab video anonymize --boxes-out`` and ``facelab video render``.

A JSON document (``format: "facelab-video-boxes"``, ``version: 1``) with no pixels, embeddings or
absolute paths::

    {"format": "facelab-video-boxes", "version": 1,
     "video": {"width": 1280, "height": 720, "frames": 300, "fps": 30.0, "duration": 10.0},
     "render": {"mode": "blur", "mask_scale": 1.3, "color": [0, 0, 0]},
     "tracks": [{"track_id": 1, "mask": true, "first_frame": 0, "last_frame": 120,
                 "identity": {"status": "matched", "person_id": "ann", "name": "ann", ...}}],
     "frames": [{"frame": 0, "time": 0.0,
                 "boxes": [{"box": [x1, y1, x2, y2], "track_id": 1, "source": "detected"}]}, ...]}

Boxes are face boxes in pixels of the upright frame, before ``mask_scale``. A box is hidden when its
own ``"mask"`` says so, else when its track's ``"mask"`` says so, else always. To edit: delete a
box, add ``{"box": [...]}`` to a frame (adding the frame if it is missing), or set a track's
``"mask"`` to ``false`` to leave that person visible. Frames are matched by index; render checks the
video's size and frame count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = ["BOXES_FORMAT", "BOXES_VERSION", "BoxesFile", "read_boxes", "parse_boxes", "write_boxes", "boxes_document"]

BOXES_FORMAT = "facelab-video-boxes"
BOXES_VERSION = 1


@dataclass
class BoxesFile:
    """A parsed boxes file.

    Attributes:
        video: the ``video`` section (width, height, frames, fps, duration).
        render: the ``render`` section (mode, mask_scale, color).
        masked: ``{frame: (K, 4) float32}`` boxes to hide per frame.
        visible: ``{frame: (K, 4) float32}`` boxes left visible (kept for reference).
    """

    video: dict[str, Any]
    render: dict[str, Any]
    masked: dict[int, np.ndarray]
    visible: dict[int, np.ndarray]

    def boxes_for(self, frame: int) -> np.ndarray:
        """``(K, 4)`` boxes to hide on ``frame``."""
        return self.masked.get(frame, np.zeros((0, 4), np.float32))


def boxes_document(
    video: dict[str, Any],
    times: list[float],
    plan: list[list[Any]],
    tracks: list[dict[str, Any]],
    render: dict[str, Any],
) -> dict[str, Any]:
    """Build the JSON document from a mask plan (:func:`facelab.track.plan.plan_masks`).

    Args:
        video: ``{"width", "height", "frames", "fps", "duration"}``.
        times: every frame's time in seconds.
        plan: per frame, :class:`~facelab.track.plan.MaskBox` items.
        tracks: per track, ``{"track_id", "mask", "first_frame", "last_frame", "identity"}``.
        render: ``{"mode", "mask_scale", "color"}``.
    """
    frames = []
    for i, boxes in enumerate(plan):
        entry: dict[str, Any] = {"frame": i, "time": round(float(times[i]), 6) if i < len(times) else None}
        entry["boxes"] = [
            {"box": [round(float(v), 1) for v in b.box], "track_id": b.track_id, "source": b.source} for b in boxes
        ]
        frames.append(entry)
    return {
        "format": BOXES_FORMAT,
        "version": BOXES_VERSION,
        "video": video,
        "render": render,
        "tracks": tracks,
        "frames": frames,
    }


def write_boxes(path: str | os.PathLike, document: dict[str, Any]) -> None:
    """Write the document (through a temporary file renamed at the end)."""
    from facelab.video.io import atomic_output

    with atomic_output(path) as temp:
        temp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _box(value: Any, where: str) -> np.ndarray:
    try:
        box = np.asarray(value, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: a box is [x1, y1, x2, y2], got {value!r}") from None
    if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise ConfigError(f"{where}: box {value!r} is empty or not finite (need x1 < x2 and y1 < y2)")
    return box


def read_boxes(path: str | os.PathLike) -> BoxesFile:
    """Read and check a boxes file.

    Raises:
        ConfigError: the file is missing, not JSON, of another format/version, or has a bad box
            (the message names the frame).
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the boxes file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{p}: not a JSON file ({exc})") from None
    return parse_boxes(doc, str(p))


def parse_boxes(doc: Any, p: str = "boxes") -> BoxesFile:
    """Check a boxes document already loaded from JSON (``p`` names it in messages).

    Raises:
        ConfigError: see :func:`read_boxes`.
    """
    if not isinstance(doc, dict) or doc.get("format") != BOXES_FORMAT:
        raise ConfigError(f"{p}: not a facelab boxes file (format {BOXES_FORMAT!r} expected)")
    if doc.get("version") != BOXES_VERSION:
        raise ConfigError(f"{p}: boxes file version {doc.get('version')!r}; this facelab reads {BOXES_VERSION}")
    video = doc.get("video") or {}
    render = doc.get("render") or {}
    track_mask: dict[Any, bool] = {}
    for t in doc.get("tracks") or []:
        if isinstance(t, dict) and "track_id" in t:
            track_mask[t["track_id"]] = bool(t.get("mask", True))
    masked: dict[int, list[np.ndarray]] = {}
    visible: dict[int, list[np.ndarray]] = {}
    frames = doc.get("frames")
    if not isinstance(frames, list):
        raise ConfigError(f"{p}: 'frames' must be a list")
    for k, entry in enumerate(frames):
        if not isinstance(entry, dict) or not isinstance(entry.get("frame"), int) or entry["frame"] < 0:
            raise ConfigError(f"{p}: frames[{k}] needs a non-negative integer 'frame'")
        index = entry["frame"]
        for j, item in enumerate(entry.get("boxes") or []):
            where = f"{p}: frame {index}, box {j}"
            if not isinstance(item, dict):
                item = {"box": item}
            box = _box(item.get("box"), where)
            hide = item.get("mask")
            if hide is None:
                hide = track_mask.get(item.get("track_id"), True)
            (masked if hide else visible).setdefault(index, []).append(box)
    as_arrays = {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in masked.items()}
    return BoxesFile(video, render, as_arrays, {k: np.asarray(v, np.float32) for k, v in visible.items()})
