"""Detection time per photo: YuNet vs the open pack's dlib MMOD (default fast mode).

Runs both on dlib's 20 reference photos (``../shared/data/reference``) and prints a table:
mean and median milliseconds per photo, and faces found (dlib found 31).

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
        "YuNet, native size": YuNet.from_path(YUNET, runtime),
        "YuNet, det_size 640x640": YuNet.from_path(YUNET, runtime, det_size=(640, 640)),
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


if __name__ == "__main__":
    main()
