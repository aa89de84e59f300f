"""Benchmark the ``open`` pack (dlib's models on ONNX Runtime) against dlib and InsightFace's SCRFD.

Prints one table:

* per-photo detection time of the open pack's MMOD detector in its default (fast) mode and in
  dlib's mode (``upsample=1``, dlib's exact pyramid), on the 20 photos of
  ``../shared/data/reference/`` (dlib's own reference outputs);
* per-face recognition time (5-point shape predictor + dlib chip + ResNet, all faces batched);
* dlib's own numbers **as recorded** in ``dlib_reference.json`` on this machine (dlib 20.0.1:
  250 s to detect on the 20 photos, 2.3 s to describe 31 faces); they are not re-run here;
* InsightFace's SCRFD ``det_500m`` / ``det_2.5g`` (``../shared/models/insightface/``) through
  :func:`facelab.detection.create_detector` at its default input size, on the same photos.

Also checks the parity each row stands on: faces found vs dlib's per photo.

Each timing is the minimum over ``--repeat`` runs of the same call (default 3), which removes
most of the noise of other processes on a shared machine; ``--repeat 1`` gives single runs.
Usage::

    python benchmarks/bench_open_pack.py [--repeat 3] [--skip-dlib-mode] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("FACELAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _best(fn, repeat: int):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def _matches(rects: np.ndarray, want: np.ndarray) -> int:
    return sum(1 for w in want if max((_iou(w, r) for r in rects), default=0.0) >= 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the minimum is reported")
    parser.add_argument("--skip-dlib-mode", action="store_true", help="skip dlib's slow mode (about a minute)")
    parser.add_argument("--home", default=None, help="facelab home for the converted models (default: a temp dir)")
    args = parser.parse_args(argv)

    from facelab.dlib.mmod import DLIB_MODE, FASTER_MODE
    from facelab.dlib.pack import build_open_pack, open_detector, open_recognizer
    from facelab.io.image import load_image
    from facelab.structures import Detections

    ref_dir = SHARED / "data" / "reference"
    meta = json.loads((ref_dir / "dlib_reference.json").read_text())
    ref = np.load(ref_dir / "dlib_reference.npz")
    home = args.home or tempfile.mkdtemp(prefix="facelab_bench_")
    t = time.perf_counter()
    build_open_pack(home)
    build_s = time.perf_counter() - t
    det = open_detector(home=home)
    det_dlib = det.with_mode(DLIB_MODE)
    rec = open_recognizer(home=home)
    entries = meta["images"]
    images = [load_image(SHARED / "data" / e["image"]) for e in entries]
    wants = [ref[e["key"] + "_rects"] for e in entries]
    big = [i for i, e in enumerate(entries) if 1.0e6 <= e["size"][0] * e["size"][1] <= 2.1e6]
    n_faces = sum(len(w) for w in wants)

    det.detect_rects(images[0])  # warm-up (session init)
    fast_t, fast_found, fast_count = [], 0, 0
    for img, want in zip(images, wants):
        sec, (rects, _) = _best(lambda img=img: det.detect_rects(img), args.repeat)
        fast_t.append(sec)
        fast_found += _matches(rects, want)
        fast_count += len(rects)

    faster = det.with_mode(FASTER_MODE)
    faster_t, faster_found = [], 0
    for img, want in zip(images, wants):
        sec, (rects, _) = _best(lambda img=img: faster.detect_rects(img), args.repeat)
        faster_t.append(sec)
        faster_found += _matches(rects, want)

    dlib_t, dlib_exact = [], 0
    if not args.skip_dlib_mode:
        for img, want in zip(images, wants):
            sec, (rects, _) = _best(lambda img=img: det_dlib.detect_rects(img), 1)
            dlib_t.append(sec)
            dlib_exact += sum(1 for w in want if any(np.array_equal(w, r) for r in rects))

    boxes = [Detections(w + [0, 0, 1, 1], np.ones(len(w))) for w in wants]
    rec.embed_detections(images[:1], boxes[:1])  # warm-up
    rec_s, embs = _best(lambda: rec.embed_detections(images, boxes), args.repeat)
    got = np.concatenate(embs)
    expect = np.concatenate([ref[e["key"] + "_desc"] for e in entries if e["faces"]])
    rec_err = float(np.abs(got - expect).max())

    scrfd = {}
    try:
        from facelab.detection import create_detector

        for name in ("det_500m", "det_2.5g"):
            path = SHARED / "models" / "insightface" / f"{name}.onnx"
            if not path.is_file():
                continue
            sd = create_detector(path)
            sd.detect(images[0])
            times, found = [], 0
            for img, want in zip(images, wants):
                sec, d = _best(lambda img=img, sd=sd: sd.detect(img), args.repeat)
                times.append(sec)
                found += _matches(np.asarray(d.boxes, np.float64) - [0, 0, 1, 1], want)
            scrfd[name] = (times, found)
    except Exception as exc:  # noqa: BLE001 - report and carry on
        print(f"SCRFD skipped: {exc}", file=sys.stderr)

    dlib_det_total = meta["timing_s"]["detect_total"]
    dlib_desc_total = meta["timing_s"]["describe_total"]
    dlib_faces = meta["timing_s"]["faces"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def row(
        name: str, per_photo: list[float] | None, big_mean: float | None, per_face: float | None, note: str
    ) -> None:
        pp = "-" if per_photo is None else f"{np.mean(per_photo):8.3f}"
        bm = "-" if big_mean is None else f"{big_mean:8.3f}"
        pf = "-" if per_face is None else f"{per_face * 1000:8.1f}"
        print(f"| {name:<44} | {pp:>9} | {bm:>9} | {pf:>9} | {note} |")

    print(
        f"\n20 reference photos ({n_faces} faces), {len(big)} of them 1-2 MP; min of {args.repeat} runs; "
        f"1-min load average {load:.1f} on {os.cpu_count()} CPUs; open pack built in {build_s:.1f} s\n"
    )
    print("| method | s/photo (all 20) | s/photo (1-2 MP) | ms/face recog. | faces found / notes |")
    print("|---|---|---|---|---|")
    row(
        "open pack MMOD, default (fast) mode",
        fast_t,
        float(np.mean([fast_t[i] for i in big])),
        None,
        f"{fast_found}/{n_faces} of dlib's faces, {fast_count} boxes in all",
    )
    row(
        "open pack MMOD, 'faster' mode (level_step=2)",
        faster_t,
        float(np.mean([faster_t[i] for i in big])),
        None,
        f"{faster_found}/{n_faces} of dlib's faces",
    )
    if dlib_t:
        row(
            "open pack MMOD, dlib mode (upsample 1)",
            dlib_t,
            float(np.mean([dlib_t[i] for i in big])),
            None,
            f"{dlib_exact}/{n_faces} boxes identical to dlib's",
        )
    row(
        "dlib 20.0.1 cnn_face_detection (recorded)",
        [dlib_det_total / len(entries)],
        None,
        None,
        "dlib's own run on this machine, from dlib_reference.json, not re-run",
    )
    row(
        "open pack recognition (shape+chip+ResNet)",
        None,
        None,
        rec_s / n_faces,
        f"all {n_faces} faces batched; max |desc - dlib| = {rec_err:.1e}",
    )
    row(
        "dlib 20.0.1 compute_face_descriptor (recorded)",
        None,
        None,
        dlib_desc_total / dlib_faces,
        "dlib's own run, from dlib_reference.json, not re-run",
    )
    for name, (times, found) in scrfd.items():
        row(
            f"InsightFace SCRFD {name} (default input)",
            times,
            float(np.mean([times[i] for i in big])),
            None,
            f"{found}/{n_faces} of dlib's faces",
        )
    print()
    speed = (rec_s / n_faces) / (dlib_desc_total / dlib_faces)
    print(f"recognition: {speed:.2f}x dlib's time per face (target <= 0.5x)")
    print(
        f"detection, default mode, 1-2 MP photos: mean {np.mean([fast_t[i] for i in big]):.3f} s, "
        f"max {np.max([fast_t[i] for i in big]):.3f} s (target <= 0.5 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
