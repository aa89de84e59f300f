"""``facelab video analyze | anonymize | render``: thin wrappers over :mod:`facelab.video`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facelab.cli.analyze import (
    _add_model_options,
    _add_progress_options,
    _analyzer,
    _show_progress,
    _threshold,
    stdout_closed,
)
from facelab.errors import ConfigError

__all__ = ["register"]


def _colour(text: str) -> tuple[int, int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise argparse.ArgumentTypeError(f"expected B,G,R with values 0-255, got {text!r}")
    return parts[0], parts[1], parts[2]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _named(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "references", None) or getattr(args, "gallery", None))


@contextlib.contextmanager
def _matcher(args: argparse.Namespace, analyzer: Any) -> Iterator[Any]:
    """The matcher of ``--references DIR`` or ``--gallery URL --collection C`` (the gallery stays open meanwhile)."""
    if getattr(args, "references", None):
        from facelab.track.identity import ReferenceMatcher

        yield ReferenceMatcher.from_folder(analyzer, args.references)
    elif getattr(args, "gallery", None):
        from facelab.gallery import Gallery
        from facelab.track.identity import GalleryMatcher

        with Gallery.open(args.gallery) as gallery:
            yield GalleryMatcher(gallery, args.collection, analyzer=analyzer, threshold=args.threshold)
    else:
        yield None


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument(
        "--detect-every", type=_positive_int, default=1, metavar="N", help="detect on 1 frame in N (default 1)"
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--references",
        default=None,
        metavar="DIR",
        help="people to recognise: one sub-folder of photos per person (its name is the person's name)",
    )
    who.add_argument(
        "--gallery", "-g", default=None, metavar="URL", help="people to recognise: a facelab gallery (path or URL)"
    )
    p.add_argument("--collection", "-c", default="default", help="gallery collection (default: default)")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="match threshold, or a calibration JSON (default: the collection's, else the pack's)",
    )
    _add_progress_options(p)


def _add_render_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    from facelab.ops.redact import DEFAULT_MASK_SCALE, REDACTION_MODES

    p.add_argument(
        "--mode",
        choices=REDACTION_MODES,
        default="blur" if defaults else None,
        help="how faces are hidden (default blur)",
    )
    p.add_argument(
        "--mask-scale",
        type=float,
        default=DEFAULT_MASK_SCALE if defaults else None,
        help=f"mask side as a multiple of the face box (default {DEFAULT_MASK_SCALE:g}; deface's 1.3 is facelab's 1.6)",
    )
    p.add_argument(
        "--color", type=_colour, default=None, metavar="B,G,R", help="fill colour of --mode solid (default 0,0,0)"
    )
    p.add_argument("--no-audio", action="store_true", help="drop the audio (default: copied unchanged)")
    p.add_argument("--crf", type=int, default=23, help="H.264 quality, lower is better (default 23)")
    p.add_argument("--preset", default="medium", help="x264 speed preset (default medium)")


def _media_in_folder(folder: Path) -> list[Path]:
    from facelab.io.paths import IMAGE_SUFFIXES
    from facelab.video.io import VIDEO_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)


def _is_video(path: Path) -> bool:
    from facelab.io.paths import IMAGE_SUFFIXES
    from facelab.video.io import VIDEO_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES:
        return False
    return True  # unknown ending: let the video reader say what it is


def _cmd_anonymize(args: argparse.Namespace) -> int:
    from facelab.track.plan import MaskPlanConfig
    from facelab.video.anonymize import AnonymizeOptions

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise ConfigError(f"{src}: no such file or folder")
    if args.boxes_out and src.is_dir():
        raise ConfigError("--boxes-out needs one video as input, not a folder")
    options = AnonymizeOptions(
        mode=args.mode,
        mask_scale=args.mask_scale,
        color=args.color or (0, 0, 0),
        detect_every=args.detect_every,
        audio=not args.no_audio,
        keep=tuple(args.keep or ()),
        only=tuple(args.only or ()),
        plan=MaskPlanConfig(lookback=args.lookback, hold=args.hold),
        crf=args.crf,
        preset=args.preset,
    )
    named = bool(options.keep or options.only)
    if named and not _named(args):
        raise ConfigError("--except/--only need --references DIR (photos of the people) or --gallery URL")
    analyzer = _analyzer(args, ["recognition"] if named else ["detection"])
    with _matcher(args, analyzer) if named else contextlib.nullcontext() as matcher:
        return _anonymize_all(args, src, dst, analyzer, options, matcher)


def _anonymize_all(args: argparse.Namespace, src: Path, dst: Path, analyzer: Any, options: Any, matcher: Any) -> int:
    from facelab.video.anonymize import anonymize_image, anonymize_video, write_image

    if src.is_dir():
        jobs = [(p, dst / p.relative_to(src)) for p in _media_in_folder(src)]
        if not jobs:
            raise ConfigError(f"{src}: no images or videos in this folder")
    else:
        jobs = [(src, dst)]
    failed = 0
    for path, out in jobs:
        if src.is_dir():
            out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if _is_video(path):
                report = anonymize_video(
                    path,
                    out,
                    analyzer,
                    options,
                    matcher=matcher,
                    boxes_out=args.boxes_out,
                    progress=_show_progress(args),
                )
                print(
                    f"{path} -> {out}: {report.frames} frames, {report.tracks} track(s), "
                    f"{report.visible_tracks} left visible, {report.masked_boxes} boxes hidden, "
                    f"{report.audio_streams} audio stream(s) copied, {report.fps:.1f} frames/s",
                    file=sys.stderr,
                )
            else:
                from facelab.io.image import load_image

                image, hidden = anonymize_image(load_image(path), analyzer, options, matcher=matcher)
                write_image(out, image)
                print(f"{path} -> {out}: {hidden} face(s) hidden", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one bad file of a folder is reported, the rest go on
            from facelab.errors import FacelabError

            if not isinstance(exc, FacelabError) or len(jobs) == 1:
                raise
            failed += 1
            print(f"facelab video anonymize: skipped {path}: {exc}", file=sys.stderr)
    return 3 if failed else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from facelab.video.anonymize import render_video

    report = render_video(
        args.input,
        args.boxes,
        args.output,
        mode=args.mode,
        mask_scale=args.mask_scale,
        color=args.color,
        audio=not args.no_audio,
        crf=args.crf,
        preset=args.preset,
        progress=_show_progress(args),
    )
    print(
        f"{args.input} -> {args.output}: {report.frames} frames, {report.masked_boxes} boxes hidden, "
        f"{report.audio_streams} audio stream(s) copied",
        file=sys.stderr,
    )
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from facelab.video.live import is_live_source

    live = is_live_source(args.input)
    if not live and not Path(args.input).exists():
        raise ConfigError(f"{args.input}: no such file")
    if args.annotated and live:
        raise ConfigError("--annotated needs a video file as input")
    analyzer = _analyzer(args, ["recognition"] if _named(args) else ["detection"])
    if live:
        opened: Any = contextlib.nullcontext()
    else:
        from facelab.video.io import open_video

        opened = open_video(args.input, "pyav" if args.annotated else args.backend)  # read once: info, frames, audio
    with opened as reader, _matcher(args, analyzer) as matcher:
        return _analyze(args, reader, analyzer, matcher)


def _analyze(args: argparse.Namespace, reader: Any, analyzer: Any, matcher: Any) -> int:
    """Analyse ``reader`` (an open video file), or the live source ``args.input`` when it is ``None``."""
    from facelab.track.stream import VideoAnalyzer
    from facelab.video.analyze import draw_tracks, iter_video, write_summary
    from facelab.video.io import VideoWriter, atomic_output

    live = reader is None
    info = None if live else reader.info
    va = VideoAnalyzer(analyzer, fps=30.0 if live else info.fps, detect_every=args.detect_every, matcher=matcher)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    bar = None
    if _show_progress(args):
        from tqdm import tqdm

        bar = tqdm(total=None if live else info.frames, unit="frame", file=sys.stderr, dynamic_ncols=True)
    writer = None
    events: list[Any] = []
    try:
        with atomic_output(args.annotated) if args.annotated else contextlib.nullcontext() as annotated:
            if annotated is not None:
                writer = VideoWriter(annotated, reader, audio=True)
                frames = iter_video(reader, va, all_images=True, audio_sink=writer.mux_audio)
            else:
                frames = iter_video(args.input if live else reader, va, max_seconds=args.max_seconds)
            try:
                for frame, result in frames:
                    out.write(json.dumps(result.to_dict()) + "\n")
                    events.extend(result.events)
                    for e in result.events:
                        _print_event(e, bar)
                    if writer is not None:
                        writer.write(draw_tracks(frame.image, result), frame.pts, frame.index)
                    if bar is not None:
                        bar.update(1)
            except KeyboardInterrupt:
                if not live:
                    raise
                print("stopped", file=sys.stderr)  # Ctrl-C ends a live session: the summary is still written
            final = va.finish()
            events.extend(final)
            for e in final:
                _print_event(e, bar)
                out.write(json.dumps({"event": e.to_dict()}) + "\n")
            if writer is not None:
                writer.close()
                writer = None
    except BrokenPipeError:
        if out is not sys.stdout:
            raise
        return stdout_closed()
    finally:
        if writer is not None:
            writer.abort()
        if bar is not None:
            bar.close()
        if out is not sys.stdout:
            out.close()
    tracks = va.tracks()
    if args.summary:
        video = info.to_dict() if not live else {"source": args.input}
        write_summary(args.summary, video, tracks, events, thumbnails=args.thumbnails)
    named = sum(1 for t in tracks if t.identity is not None and t.identity.status == "matched")
    print(
        f"{args.input}: {va.index + 1} frames, {len(tracks)} track(s), {named} recognised, {len(events)} event(s)",
        file=sys.stderr,
    )
    return 0


def _print_event(event: Any, bar: Any) -> None:
    who = event.name or event.person_id or f"track {event.track_id}"
    text = f"{event.time:9.3f}s {event.type:14s} {who}"
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``video`` with its ``analyze``, ``anonymize`` and ``render`` sub-commands."""
    video = subparsers.add_parser("video", help="track, recognise and anonymise faces in videos", description=__doc__)
    sub = video.add_subparsers(dest="video_command", metavar="COMMAND")
    video.set_defaults(func=lambda args: (video.print_help(), 2)[1])

    p = sub.add_parser(
        "anonymize",
        help="hide faces in a video (audio kept), an image or a folder",
        description="Hide faces: videos keep their audio, frame times and frame count; images and folders work too.",
    )
    p.add_argument("input", metavar="IN", help="video, image, or folder of them")
    p.add_argument("output", metavar="OUT", help="output file (or folder for a folder)")
    _add_render_options(p, defaults=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--except", dest="keep", action="extend", nargs="+", metavar="PERSON", help="leave these people visible"
    )
    group.add_argument(
        "--only", dest="only", action="extend", nargs="+", metavar="PERSON", help="hide only these people"
    )
    p.add_argument("--boxes-out", default=None, metavar="JSON", help="also write the editable boxes file")
    p.add_argument("--lookback", type=float, default=0.5, help="seconds a mask starts before a face is first found")
    p.add_argument("--hold", type=float, default=0.5, help="seconds a mask stays after a face is last found")
    _add_common(p)
    p.set_defaults(func=_cmd_anonymize, command="video anonymize")

    p = sub.add_parser(
        "render",
        help="hide the boxes of a boxes file (no detection)",
        description="Re-render from an edited boxes file.",
    )
    p.add_argument("input", metavar="IN", help="the source video")
    p.add_argument("boxes", metavar="BOXES", help="boxes JSON from anonymize --boxes-out (edited or not)")
    p.add_argument("output", metavar="OUT", help="output video")
    _add_render_options(p, defaults=False)
    _add_progress_options(p)
    p.set_defaults(func=_cmd_render, command="video render")

    p = sub.add_parser(
        "analyze",
        help="tracks, identities and enter/exit events of a video, camera or stream",
        description="JSON Lines per frame (tracks, boxes, identities, events); summary, thumbnails, annotated video.",
    )
    p.add_argument("input", metavar="IN", help="video file, cam:N, or a stream URL (rtsp://...)")
    p.add_argument("--output", "-o", default=None, help="JSON Lines file (default: stdout)")
    p.add_argument("--summary", default=None, metavar="JSON", help="write the tracks and events summary here")
    p.add_argument(
        "--thumbnails", default=None, metavar="DIR", help="save each track's best face here (with --summary)"
    )
    p.add_argument("--annotated", default=None, metavar="OUT", help="write a video with the tracks drawn (audio kept)")
    p.add_argument("--backend", choices=("auto", "pyav", "opencv"), default="auto", help="video reader (default auto)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop a live source after this long")
    _add_common(p)
    p.set_defaults(func=_cmd_analyze, command="video analyze")
