"""Analyse a video file or live stream: per-frame tracks and identities, track summaries, annotated video.

:func:`iter_video` drives a :class:`~facelab.track.stream.VideoAnalyzer` over a file (PyAV, or
OpenCV without the extra) or a live source (:class:`~facelab.video.live.LiveSource`) and yields
``(frame, result)`` pairs; :func:`draw_tracks` draws a result on its frame; :func:`write_summary`
saves the tracks (with best-face thumbnails) and events as JSON.
"""

from __future__ import annotations

import json
import os
import time as _time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.track.events import PresenceEvent
from facelab.track.stream import FrameResult, TrackSummary, VideoAnalyzer
from facelab.video.io import Frame, VideoInfo, VideoReader, atomic_output, open_video
from facelab.video.live import LiveSource, is_live_source

__all__ = ["iter_video", "draw_tracks", "write_summary", "track_colour"]


def iter_video(
    source: str | os.PathLike | VideoReader,
    analyzer: VideoAnalyzer,
    *,
    backend: str = "auto",
    all_images: bool = False,
    audio_sink: Callable[[Any], None] | None = None,
    max_seconds: float | None = None,
) -> Iterator[tuple[Frame, FrameResult]]:
    """Run ``analyzer`` on every frame of a file, or on the newest frames of a live source.

    Args:
        source: a video file, an open :class:`~facelab.video.io.VideoReader` (read from its
            current position, left open), ``cam:N``, or a stream URL (``rtsp://...``).
        analyzer: the :class:`VideoAnalyzer` (its ``fps`` should be the video's).
        backend: file reader (``auto``, ``pyav``, ``opencv``) when ``source`` is a path.
        all_images: decode every frame to pixels (for drawing); otherwise only detection frames.
        audio_sink: receives the file's audio packets (PyAV), e.g. a writer's ``mux_audio``.
        max_seconds: stop a live source after this long.

    Yields:
        ``(frame, result)``; ``frame.image`` is ``None`` on frames not decoded to pixels.
    """
    if isinstance(source, VideoReader):
        yield from _iter_reader(source, analyzer, all_images, audio_sink)
        return
    if is_live_source(str(source)):
        with LiveSource(str(source)) as live:
            start = _time.monotonic()
            for frame in live:
                yield frame, analyzer.process(frame.image, frame.time)
                if max_seconds is not None and _time.monotonic() - start >= max_seconds:
                    break
        return
    with open_video(source, backend) as reader:
        yield from _iter_reader(reader, analyzer, all_images, audio_sink)


def _iter_reader(
    reader: VideoReader, analyzer: VideoAnalyzer, all_images: bool, audio_sink: Callable[[Any], None] | None
) -> Iterator[tuple[Frame, FrameResult]]:
    every = analyzer.detect_every
    want = None if all_images else (lambda i: i % every == 0)
    for frame in reader.frames(want_image=want, audio_sink=audio_sink):
        yield frame, analyzer.process(frame.image, frame.time, detect=frame.index % every == 0)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per track id."""
    rng = np.random.default_rng(track_id * 7919)
    return tuple(int(v) for v in rng.integers(64, 256, size=3))


def draw_tracks(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw a frame's tracks: box, ``#id`` and identity; lost tracks dashed grey. Returns a copy (BGR)."""
    import cv2

    canvas = np.ascontiguousarray(image).copy()
    for face in result.faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        colour = (128, 128, 128) if face.state == "lost" else track_colour(face.track_id)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1 if face.state != "detected" else 2)
        label = f"#{face.track_id}"
        ident = face.identity or {}
        if ident.get("status") == "matched":
            label += f" {ident.get('name')}"
        elif ident.get("status") in ("unknown", "conflict"):
            label += f" {ident['status']}"
        cv2.putText(canvas, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return canvas


def write_summary(
    path: str | os.PathLike,
    info: VideoInfo | dict[str, Any],
    tracks: Sequence[TrackSummary],
    events: Sequence[PresenceEvent],
    *,
    thumbnails: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save tracks and events as JSON (and each track's best face as ``track_<id>.jpg`` under ``thumbnails``).

    Returns:
        The document written.
    """
    import cv2

    items = []
    thumb_dir = None if thumbnails is None else Path(thumbnails)
    if thumb_dir is not None:
        thumb_dir.mkdir(parents=True, exist_ok=True)
    for s in tracks:
        item = s.to_dict()
        if thumb_dir is not None and s.thumbnail is not None:
            name = f"track_{s.track_id}.jpg"
            cv2.imwrite(str(thumb_dir / name), s.thumbnail)
            item["thumbnail"] = name
        items.append(item)
    doc = {
        "video": info.to_dict() if isinstance(info, VideoInfo) else dict(info),
        "tracks": items,
        "events": [e.to_dict() for e in events],
        **(extra or {}),
    }
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc
