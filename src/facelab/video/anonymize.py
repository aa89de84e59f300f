"""Anonymise videos and images: analyse (tracks, identities), plan the masks, render with the audio kept.

A video is read twice: the first pass runs :class:`~facelab.track.stream.VideoAnalyzer` (detection
every N frames, tracking, identities when people are kept or hidden by name) and plans every
frame's masks with :func:`~facelab.track.plan.plan_masks`; the second pass decodes again, hides
the planned boxes and encodes H.264 with the source's audio copied unchanged. Frames without a
box are re-encoded straight from the decoder (no colour conversion). The plan can be saved as an
editable boxes file (:mod:`facelab.video.boxes`) and rendered again with :func:`render_video`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, VideoError
from facelab.ops.redact import DEFAULT_MASK_SCALE, REDACTION_MODES, redact
from facelab.track.identity import IdentityConfig, Matcher, TrackIdentity, decide, names_of, resolve_rules
from facelab.track.plan import MaskPlanConfig, plan_masks, should_mask
from facelab.track.stream import VideoAnalyzer
from facelab.video.analyze import iter_video
from facelab.video.boxes import BoxesFile, boxes_document, parse_boxes, read_boxes, write_boxes
from facelab.video.io import PyAVReader, VideoReader, VideoWriter, atomic_output

__all__ = [
    "AnonymizeOptions",
    "AnonymizeReport",
    "anonymize_video",
    "render_video",
    "anonymize_image",
    "plan_video",
    "write_image",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnonymizeOptions:
    """How to anonymise.

    Attributes:
        mode: ``blur``, ``mosaic``, ``solid`` or ``ellipse`` (:mod:`facelab.ops.redact`).
        mask_scale: side multiplier of each face box.
        color: BGR colour of ``solid``.
        detect_every: run the detector on one frame in this many.
        audio: copy the audio streams.
        keep: person ids or names left visible (``--except``).
        only: person ids or names to hide, everyone else visible (``--only``).
        plan: reach of masks before/after/between detections.
        crf: x264 quality.
        preset: x264 speed preset.
    """

    mode: str = "blur"
    mask_scale: float = DEFAULT_MASK_SCALE
    color: tuple[int, int, int] = (0, 0, 0)
    detect_every: int = 1
    audio: bool = True
    keep: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    plan: MaskPlanConfig = field(default_factory=MaskPlanConfig)
    crf: int = 23
    preset: str = "medium"

    def __post_init__(self) -> None:
        if self.mode not in REDACTION_MODES:
            raise ConfigError(f"unknown anonymisation mode {self.mode!r}; choose from {', '.join(REDACTION_MODES)}")
        if not self.mask_scale > 0:
            raise ConfigError(f"mask_scale must be positive, got {self.mask_scale}")
        if self.detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.keep and self.only:
            raise ConfigError("give people to keep visible (--except) or to hide (--only), not both")

    @property
    def render(self) -> dict[str, Any]:
        """The ``render`` section of a boxes file."""
        return {"mode": self.mode, "mask_scale": self.mask_scale, "color": list(self.color)}


@dataclass
class AnonymizeReport:
    """What an anonymisation did.

    Attributes:
        output: the written file.
        frames: video frames written.
        detect_frames: frames the detector ran on.
        tracks: tracks found.
        visible_tracks: tracks left visible (``--except``/``--only``).
        masked_boxes: boxes hidden over the whole video.
        analysis_seconds: first pass (decode + detect + track).
        render_seconds: second pass (decode + mask + encode + audio copy).
        audio_streams: audio streams copied.
    """

    output: str
    frames: int
    detect_frames: int = 0
    tracks: int = 0
    visible_tracks: int = 0
    masked_boxes: int = 0
    analysis_seconds: float = 0.0
    render_seconds: float = 0.0
    audio_streams: int = 0

    @property
    def fps(self) -> float:
        """Frames per second over both passes."""
        total = self.analysis_seconds + self.render_seconds
        return self.frames / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        out = dict(self.__dict__)
        out["fps"] = round(self.fps, 3)
        return out


def _bar(progress: bool, total: int | None, desc: str) -> Any:
    if not progress:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, dynamic_ncols=True)


def plan_video(
    reader: VideoReader,
    analyzer: Any,
    options: AnonymizeOptions,
    *,
    matcher: Matcher | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], VideoAnalyzer]:
    """First pass: analyse a video and build its boxes document.

    Returns:
        ``(document, video_analyzer)``; the document is what :func:`~facelab.video.boxes.write_boxes` saves.
    """
    named = options.keep or options.only
    if named and matcher is None:
        raise ConfigError("keeping or hiding people by name needs reference people or a gallery")
    keep = tuple(names_of(matcher, options.keep))
    only = tuple(names_of(matcher, options.only))
    info = reader.info
    va = VideoAnalyzer(
        analyzer, fps=info.fps, detect_every=options.detect_every, matcher=matcher if named else None, thumbnails=False
    )
    bar = _bar(progress, info.frames, "analyse")
    n = 0
    try:
        for _ in iter_video(reader, va):  # pixels of the detection frames only
            n += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    log = va.log
    plan = plan_masks(
        n,
        log.tracks,
        log.untracked,
        fps=info.fps,
        detect_every=options.detect_every,
        size=(info.width, info.height),
        cuts=log.cuts,
        detect_frames=log.detect_frames,
        config=options.plan,
    )
    tracks = []
    for s in va.tracks():
        ident = va.identities.get(s.track_id)
        tracks.append(
            {
                "track_id": s.track_id,
                "mask": should_mask(ident if named else None, keep, only),
                "first_frame": s.first_frame,
                "last_frame": s.last_frame,
                "detections": s.detections,
                **({"identity": ident.to_dict()} if named and ident is not None else {}),
            }
        )
    video = {**info.to_dict(), "frames": n}
    video.pop("path", None)
    doc = boxes_document(video, log.times, plan, tracks, options.render)
    # untracked boxes follow the same rule as a track of unknown identity
    if named:
        hide_untracked = should_mask(None, keep, only)
        for entry in doc["frames"]:
            for b in entry["boxes"]:
                if b["track_id"] is None:
                    b["mask"] = hide_untracked
    return doc, va


def _check_output(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    if Path(src).resolve() == Path(dst).resolve():
        raise ConfigError(f"the output {dst} is the input; choose another name")


def _render(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    boxes_for: Callable[[int], np.ndarray],
    options: AnonymizeOptions,
    *,
    expected_frames: int | None,
    size: tuple[int, int] | None,
    progress: bool,
) -> tuple[int, int, int]:
    """Second pass with ``options``' rendering and encoding settings; returns ``(frames, masked boxes, audio streams)``.

    Nothing is left at ``dst`` on error.
    """
    reader = PyAVReader(src)
    try:
        info = reader.info
        if size is not None and (info.width, info.height) != tuple(size):
            raise VideoError(
                f"{src}: the video is {info.width}x{info.height} but the boxes are for {size[0]}x{size[1]}"
            )
        masked = 0
        bar = _bar(progress, expected_frames or info.frames, "render")
        with atomic_output(dst) as temp:
            writer = VideoWriter(temp, reader, audio=options.audio, crf=options.crf, preset=options.preset)
            n = 0
            try:
                for frame in reader.frames(
                    want_image=lambda i: len(boxes_for(i)) > 0 or reader.rotation != 0,
                    audio_sink=writer.mux_audio if options.audio else None,
                ):
                    boxes = boxes_for(frame.index)
                    if frame.image is None:
                        writer.write_native(frame._native, frame.pts, frame.index)
                    else:
                        image = redact(
                            frame.image,
                            boxes,
                            options.mode,
                            mask_scale=options.mask_scale,
                            color=options.color,
                            inplace=True,
                        )
                        writer.write(image, frame.pts, frame.index)
                    masked += len(boxes)
                    n += 1
                    if bar is not None:
                        bar.update(1)
                if expected_frames is not None and n != expected_frames:
                    raise VideoError(f"{src}: decoded {n} frames, but the boxes are for {expected_frames} frames")
                writer.close()
            except BaseException:
                writer.abort()
                raise
            finally:
                if bar is not None:
                    bar.close()
        return n, masked, len(writer.audio_map)
    finally:
        reader.close()


def anonymize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    analyzer: Any,
    options: AnonymizeOptions | None = None,
    *,
    matcher: Matcher | None = None,
    boxes_out: str | os.PathLike | None = None,
    progress: bool = False,
) -> AnonymizeReport:
    """Hide every face of a video (or everyone but/only the named people), keeping its sound.

    Args:
        src: input video.
        dst: output video (``.mp4``, ``.mkv``, ``.mov``...); written atomically.
        analyzer: :class:`~facelab.pipeline.FaceAnalyzer`.
        options: see :class:`AnonymizeOptions`.
        matcher: who is who, for ``options.keep`` / ``options.only``.
        boxes_out: also save the editable boxes file here.
        progress: show progress bars on stderr (frames per second included).

    Raises:
        VideoError: unreadable input, or an output that cannot be written.
        ConfigError: bad options.
    """
    options = options or AnonymizeOptions()
    _check_output(src, dst)
    t0 = time.perf_counter()
    reader = PyAVReader(src)
    try:
        doc, va = plan_video(reader, analyzer, options, matcher=matcher, progress=progress)
    finally:
        reader.close()
    t1 = time.perf_counter()
    if boxes_out is not None:
        write_boxes(boxes_out, doc)
    parsed = parse_boxes(doc)
    frames, masked, audio = _render(
        src, dst, parsed.boxes_for, options, expected_frames=doc["video"]["frames"], size=None, progress=progress
    )
    t2 = time.perf_counter()
    visible = sum(1 for t in doc["tracks"] if not t["mask"])
    return AnonymizeReport(
        str(dst), frames, len(va.log.detect_frames), len(doc["tracks"]), visible, masked, t1 - t0, t2 - t1, audio
    )


def render_video(
    src: str | os.PathLike,
    boxes: str | os.PathLike | BoxesFile,
    dst: str | os.PathLike,
    *,
    mode: str | None = None,
    mask_scale: float | None = None,
    color: tuple[int, int, int] | None = None,
    audio: bool = True,
    crf: int = 23,
    preset: str = "medium",
    progress: bool = False,
) -> AnonymizeReport:
    """Hide the boxes of a (possibly edited) boxes file; no detection runs.

    ``mode``, ``mask_scale`` and ``color`` default to the file's ``render`` section, then to
    :class:`AnonymizeOptions`' defaults (which also check them).

    Raises:
        ConfigError: a bad boxes file or render setting.
        VideoError: the video does not match the file (size, frame count) or cannot be read/written.
    """
    parsed = boxes if isinstance(boxes, BoxesFile) else read_boxes(boxes)
    _check_output(src, dst)
    render = parsed.render
    options = AnonymizeOptions(
        mode=mode or render.get("mode", AnonymizeOptions.mode),
        mask_scale=float(
            mask_scale if mask_scale is not None else render.get("mask_scale", AnonymizeOptions.mask_scale)
        ),
        color=tuple(color if color is not None else render.get("color", AnonymizeOptions.color)),
        audio=audio,
        crf=crf,
        preset=preset,
    )
    video = parsed.video
    size = (video["width"], video["height"]) if "width" in video and "height" in video else None
    t0 = time.perf_counter()
    frames, masked, audio_n = _render(
        src, dst, parsed.boxes_for, options, expected_frames=video.get("frames"), size=size, progress=progress
    )
    return AnonymizeReport(
        str(dst), frames, masked_boxes=masked, render_seconds=time.perf_counter() - t0, audio_streams=audio_n
    )


def anonymize_image(
    image: np.ndarray,
    analyzer: Any,
    options: AnonymizeOptions | None = None,
    *,
    matcher: Matcher | None = None,
) -> tuple[np.ndarray, int]:
    """Hide the faces of one ``(H, W, 3)`` ``uint8`` BGR image; returns ``(image, faces hidden)``.

    With ``options.keep``/``options.only`` each face is matched on its own (no track to confirm
    it over time): it counts as the person when its best match passes the threshold and margin,
    and :func:`~facelab.track.plan.should_mask` decides as for a confirmed track; a face matching
    nobody is treated as an untracked detection (hidden with ``--only`` too: any doubt stays hidden).
    """
    options = options or AnonymizeOptions()
    named = options.keep or options.only
    if named and matcher is None:
        raise ConfigError("keeping or hiding people by name needs reference people or a gallery")
    if named:
        keep = tuple(names_of(matcher, options.keep))
        only = tuple(names_of(matcher, options.only))
        threshold, margin = resolve_rules(IdentityConfig(), matcher, analyzer.threshold)
        faces = analyzer.analyze(image)
        boxes = []
        for face in faces:
            ident = None
            if face.embedding is not None:
                decision = decide(matcher.search(face.embedding[None, :], top_k=2)[0], threshold, margin)
                if decision.person_id is not None:
                    ident = TrackIdentity(threshold, margin, confirmed=decision)
            if should_mask(ident, keep, only):
                boxes.append(face.bbox)
    else:
        boxes = list(analyzer.detect(image).boxes)
    out = redact(
        image,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        options.mode,
        mask_scale=options.mask_scale,
        color=options.color,
    )
    return out, len(boxes)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image atomically (format from the ending).

    Raises:
        ConfigError: the ending is not an image format OpenCV writes, or the folder is missing.
    """
    import cv2

    with atomic_output(path) as temp:
        try:
            ok = cv2.imwrite(str(temp), image)
        except cv2.error:
            ok = False
        if not ok:
            raise ConfigError(f"{path}: cannot write an image with this name (use .jpg or .png)")
