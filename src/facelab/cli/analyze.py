"""``facelab analyze``, ``facelab detect`` and ``facelab compare``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError

__all__ = ["register"]

#: Exit code when the run finished but some inputs could not be read.
EXIT_SOME_FAILED = 3

#: Exit code when the reader of stdout went away (``facelab analyze DIR | head``): 128 + SIGPIPE,
#: as a shell reports for tools that die of the signal.
EXIT_BROKEN_PIPE = 141


def stdout_closed() -> int:
    """What a command does when its reader closed stdout (``... | head``): stop quietly, like Unix tools.

    Points stdout at /dev/null so the interpreter's own final flush does not fail again on the
    closed pipe, and returns :data:`EXIT_BROKEN_PIPE` for the command to exit with.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pack", default=None, help="model pack name or folder of ONNX files (default: the open pack)")
    parser.add_argument("--providers", default="auto", help="ONNX Runtime providers, comma separated (default: auto)")
    parser.add_argument("--strict", action="store_true", help="fail if a requested GPU provider is not granted")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--det-size", type=_size, default=None, metavar="WxH", help="detector input: WxH (e.g. 640x640), auto or native"
    )
    parser.add_argument(
        "--det-thresh", type=float, default=None, help="detection score threshold (default: the detector's own)"
    )
    parser.add_argument(
        "--detector",
        default=None,
        metavar="PATH",
        help="ONNX face detector that replaces the pack's (e.g. YuNet's face_detection_yunet_2026may.onnx)",
    )
    parser.add_argument(
        "--rotations",
        choices=("none", "auto"),
        default=None,
        help="auto: when no face is found, retry the photo turned by 90, 180 and 270 degrees (boxes mapped back)",
    )
    parser.add_argument("--offline", action="store_true", help="never download; fail if the pack is missing")


def _add_progress_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action="store_true", help="show a progress bar even when stderr is not a terminal"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def _show_progress(args: argparse.Namespace) -> bool:
    """A bar is drawn with ``--progress``, or on a terminal unless ``--no-progress``."""
    return bool(args.progress or (sys.stderr.isatty() and not args.no_progress))


def _size(text: str) -> tuple[int, int] | str:
    if text.lower() in ("auto", "native"):
        return text.lower()
    try:
        w, _, h = text.lower().partition("x")
        size = (int(w), int(h or w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x640, auto or native, got {text!r}") from None
    if min(size) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return size


def _threshold(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # a calibration JSON path; FaceAnalyzer validates it


def _analyzer_options(args: argparse.Namespace, modules: list[str] | None = None) -> dict[str, Any]:
    """``FaceAnalyzer`` keyword arguments from the model options (picklable: Ray actors rebuild the analyser)."""
    from facelab.runtime.session import RuntimeOptions

    providers: Any = args.providers if args.providers == "auto" else [p.strip() for p in args.providers.split(",")]
    runtime = RuntimeOptions(providers=providers, strict=args.strict, intra_op_threads=args.threads)
    return {
        "pack": args.pack,
        "modules": modules,
        "det_size": args.det_size,
        "det_thresh": args.det_thresh,
        "detector": getattr(args, "detector", None),
        "det_options": {"rotations": args.rotations} if getattr(args, "rotations", None) else None,
        "runtime": runtime,
        "download": not args.offline,
        "threshold": getattr(args, "threshold", None),
    }


def _analyzer(args: argparse.Namespace, modules: list[str] | None = None) -> Any:
    from facelab.pipeline import FaceAnalyzer

    return FaceAnalyzer(**_analyzer_options(args, modules))


def _face_summary(face: Any) -> str:
    x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
    parts = [f"box=({x1},{y1},{x2},{y2})", f"score={face.score:.3f}"]
    if face.gender is not None:
        parts.append(f"sex={face.sex} age={face.age}")
    if face.pose is not None:
        pitch, yaw, roll = (float(v) for v in face.pose)
        parts.append(f"pose(p,y,r)=({pitch:.0f},{yaw:.0f},{roll:.0f})")
    if face.landmark_2d_106 is not None:
        parts.append("landmarks=106")
    if face.embedding is not None:
        parts.append(f"embedding={face.embedding.shape[0]}-d")
    if face.liveness is not None:
        parts.append(f"liveness={'live' if face.liveness.is_live else 'SPOOF'}({face.liveness.score:.3f})")
    return " ".join(parts)


def _run_images(args: argparse.Namespace, modules: list[str] | None) -> int:
    from facelab.io.paths import expand_image_inputs
    from facelab.io.prefetch import iter_decoded

    paths = expand_image_inputs(args.images)
    if not paths:
        print(f"facelab {args.command}: no images found in {' '.join(args.images)}", file=sys.stderr)
        return 2
    analyzer = _analyzer(args, modules)
    many = len(paths) > 1
    draw_dir: Path | None = None
    if args.draw and (many or Path(args.draw).is_dir()):
        draw_dir = Path(args.draw)
        try:
            draw_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--draw {args.draw}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"--output {args.output}: cannot write ({exc.strerror or exc})") from None
    progress = None
    if many and _show_progress(args):
        from tqdm import tqdm

        progress = tqdm(total=len(paths), unit="img", file=sys.stderr)
    failed = 0
    total_faces = 0
    drawn_names: set[str] = set()

    def report(message: str) -> None:
        # Through tqdm while a bar is shown, so messages do not break the bar's line.
        if progress is not None:
            progress.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def emit(item: Any, faces: list[Any]) -> None:
        nonlocal total_faces
        total_faces += len(faces)
        if args.json or many:
            record = {
                "path": str(item.path),
                "width": int(item.image.shape[1]),
                "height": int(item.image.shape[0]),
                "faces": [f.to_dict() for f in faces],
            }
            if not args.embeddings:
                for f in record["faces"]:
                    f.pop("embedding", None)
            out.write(json.dumps(record) + "\n")
        else:
            print(f"{item.path}: {len(faces)} face(s)", file=out)
            for i, face in enumerate(faces):
                print(f"  [{i}] {_face_summary(face)}", file=out)
        if args.draw:
            import cv2

            if draw_dir is None:
                target = Path(args.draw)
            else:  # one drawing per input; a second "1.jpg" from another folder becomes "1_2.jpg"
                stem, n = item.path.stem, 1
                while (name := f"{stem}.jpg" if n == 1 else f"{stem}_{n}.jpg") in drawn_names:
                    n += 1
                drawn_names.add(name)
                target = draw_dir / name
            try:
                written = cv2.imwrite(str(target), analyzer.draw(item.image, faces))
            except cv2.error:  # OpenCV 5 raises for a name without a known image ending
                written = False
            if not written:
                raise ConfigError(
                    f"--draw: cannot write the drawing {target} (does its folder exist, and does the name end in "
                    ".jpg or .png?)"
                )

    def skip(item: Any) -> None:
        nonlocal failed
        failed += 1
        report(f"facelab {args.command}: skipped {item.error}")
        if args.json or many:
            out.write(json.dumps({"path": str(item.path), "error": item.error}) + "\n")

    def flush(batch: list[Any]) -> None:
        # Several images at once: the recogniser embeds all their faces in shared run calls.
        # Results (and errors) are written in input order.
        good = [b for b in batch if b.error is None]
        results = iter(analyzer.analyze_batch([b.image for b in good], max_num=args.max_num))
        for item in batch:
            if item.error is None:
                emit(item, next(results))
            else:
                skip(item)
        if progress is not None:
            progress.update(len(batch))
            progress.set_postfix(faces=total_faces, failed=failed)
        batch.clear()

    batch: list[Any] = []
    try:
        for item in iter_decoded(paths, workers=1, prefetch=2 * args.batch_images, max_pixels=None):
            batch.append(item)
            if len(batch) >= args.batch_images:
                flush(batch)
        if batch:
            flush(batch)
        if out is sys.stdout:
            out.flush()
    except BrokenPipeError:
        if out is not sys.stdout:
            raise
        return stdout_closed()
    finally:
        if progress is not None:
            progress.close()
        if out is not sys.stdout:
            out.close()
    if many:
        print(f"{len(paths) - failed} image(s) analysed, {total_faces} face(s), {failed} skipped", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    return _run_images(args, ["all", "liveness"] if args.liveness else None)


def _cmd_detect(args: argparse.Namespace) -> int:
    return _run_images(args, ["detection"])


def _cmd_compare(args: argparse.Namespace) -> int:
    from facelab.errors import ImageError
    from facelab.recognition.compare import compare

    analyzer = _analyzer(args, ["recognition"])
    if analyzer.recognizer is None:
        print(f"facelab compare: pack {analyzer.pack_name!r} has no recognition model", file=sys.stderr)
        return 2
    faces = []
    for image in (args.image_a, args.image_b):
        found = analyzer.analyze(image, max_num=1)
        if not found:
            raise ImageError(f"{image}: no face found")
        faces.append(found[0])
    similarity = float(compare(faces[0], faces[1]))
    same = analyzer.is_same(similarity)
    result = {
        "similarity": similarity,
        "threshold": analyzer.threshold,
        "same_person": same,
        "pack": analyzer.pack_name,
    }
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "unknown (no threshold)" if same is None else ("same person" if same else "different people")
        print(f"cosine similarity {similarity:.4f} (threshold {analyzer.threshold}): {verdict}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``analyze``, ``detect`` and ``compare``."""
    for name, func, text in (
        ("analyze", _cmd_analyze, "detect faces and run every model of the pack"),
        ("detect", _cmd_detect, "detect faces only"),
    ):
        p = subparsers.add_parser(name, help=text, description=text)
        p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or glob patterns")
        _add_model_options(p)
        p.add_argument("--json", action="store_true", help="print JSON Lines (one object per image)")
        p.add_argument("--output", "-o", default=None, help="write results to this file instead of stdout")
        p.add_argument(
            "--draw", default=None, metavar="OUT", help="save a drawing (a file, or a folder for many images)"
        )
        p.add_argument("--max-num", type=int, default=0, help="keep at most N faces per image (0 = all)")
        p.add_argument("--embeddings", action="store_true", help="include embeddings in JSON output")
        p.add_argument("--batch-images", type=int, default=4, help="images analysed together (default 4)")
        _add_progress_options(p)
        if name == "analyze":
            p.add_argument(
                "--liveness",
                action="store_true",
                help="also run RGB anti-spoofing (the 'liveness' pack, Apache-2.0; downloaded on first use)",
            )
        p.set_defaults(func=func)
    p = subparsers.add_parser("compare", help="compare the main face of two images", description="compare two faces")
    p.add_argument("image_a", metavar="A")
    p.add_argument("image_b", metavar="B")
    _add_model_options(p)
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="cosine threshold, or a calibration JSON (default: the pack's)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_compare)
