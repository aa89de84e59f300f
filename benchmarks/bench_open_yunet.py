"""Detection time per photo: YuNet's input-size modes vs the open pack's dlib MMOD (default fast mode).

Runs them on dlib's 20 reference photos (``../shared/data/reference``) and prints a table:
mean and median milliseconds per photo, and faces found (dlib found 31). YuNet modes: ``auto``
(the default: native size capped at 1280 + a 320x320 letterbox, one NMS), ``native`` (OpenCV's
FaceDetectorYN), a 640x640 letterbox, and native + 640 for comparison. ``--deepface`` adds a
second table on deepface's 64 portraits (``data/verification/deepface``): photos with no face.

Usage:
    python benchmarks/bench_open_yunet.py [--threads 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2026may.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deepface", action="store_true", help="also count faces on deepface's portraits")
    args = parser.parse_args()

    from facelab.detection.yunet import YuNet
    from facelab.dlib.pack import open_detector
    from facelab.io.image import load_image
    from facelab.runtime.session import RuntimeOptions

    meta = json.loads((SHARED / "data" / "reference" / "dlib_reference.json").read_text())
    images = [load_image(SHARED / "data" / e["image"]) for e in meta["images"]]
    runtime = RuntimeOptions(providers=["cpu"], intra_op_threads=args.threads)
    detectors = {
        "MMOD (open pack default, fast)": open_detector(runtime=runtime),
        "YuNet, auto (default: native <= 1280 + 320x320)": YuNet.from_path(YUNET, runtime),
        "YuNet, native size (OpenCV)": YuNet.from_path(YUNET, runtime, det_size="native"),
        "YuNet, det_size 640x640": YuNet.from_path(YUNET, runtime, det_size=(640, 640)),
        "YuNet, native + 640x640": YuNet.from_path(YUNET, runtime, det_size=["native", (640, 640)]),
    }
    mp = [im.shape[0] * im.shape[1] / 1e6 for im in images]
    print(
        f"{len(images)} photos ({min(mp):.2f}-{max(mp):.2f} MP), CPU, intra_op_threads={args.threads}, "
        f"median of {args.repeat} passes after a warm-up"
    )
    total = sum(e["faces"] for e in meta["images"])
    print(f"| detector | ms/photo (mean) | ms/photo (median photo) | faces found (dlib: {total}) |")
    print("|---|---|---|---|")
    for name, det in detectors.items():
        found = sum(len(det.detect(im)) for im in images)
        per = np.zeros((args.repeat, len(images)))
        for r in range(args.repeat):
            for i, im in enumerate(images):
                t = time.perf_counter()
                det.detect(im)
                per[r, i] = time.perf_counter() - t
        ms = np.median(per, axis=0) * 1e3
        print(f"| {name} | {ms.mean():.1f} | {np.median(ms):.1f} | {found} |")
    if args.deepface:
        paths = sorted((SHARED / "data" / "verification" / "deepface").glob("*.jpg"))
        portraits = [load_image(p) for p in paths]
        print(f"\n{len(portraits)} deepface portraits (one person each, faces up to ~1300 px wide)")
        print("| detector | photos with no face | photos with more than one | ms/photo (mean, one pass) |")
        print("|---|---|---|---|")
        for name, det in detectors.items():
            if not name.startswith("YuNet"):
                continue
            counts, times = [], []
            for im in portraits:
                t = time.perf_counter()
                counts.append(len(det.detect(im)))
                times.append(time.perf_counter() - t)
            zero, multi = sum(c == 0 for c in counts), sum(c > 1 for c in counts)
            print(f"| {name} | {zero} | {multi} | {np.mean(times) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
