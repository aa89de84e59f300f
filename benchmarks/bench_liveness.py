"""Liveness (both MiniFASNets) and face quality: milliseconds per face, and FaceAnalyzer with liveness on vs off.

Rows, each at batches of 1, 8 and 32 faces (the faces of the Silent-Face sample photos and the
InspireFace screen photo, boxes from SCRFD-500M, repeated to fill a batch):

* ``facelab liveness``: :meth:`LivenessRunner.predict` — both crops per face, both ONNX models,
  fusion (what ``face.liveness`` costs);
* ``  of which models``: the two ``session.run`` calls alone on ready tensors;
* ``torch reference``: the peer — the original's way (its ``test.py``): per face, per model, crop,
  ``torch`` forward at batch 1 and softmax, with our test-only torch MiniFASNet
  (``tests/minifasnet_reference.py``) kept loaded (the original even reloads the weights per call);
* ``face_quality``: :func:`facelab.attributes.quality.face_quality` per face.

Then ``FaceAnalyzer`` (SCRFD-500M main pack) per image with ``modules=["detection"]`` and
``["liveness"]`` on a one-face and a six-face photo.

Models and threads: ONNX Runtime gets ``--threads`` intra-op threads (default 2), torch
``--torch-threads`` (default 1: on the shared 2-core development machine torch with 2 OpenMP
threads ran 10-50x slower than with 1, its threads spinning against other processes). Nothing
is downloaded: the checkpoints are copied from ``../shared`` into a temporary ``FACELAB_HOME``.

Usage:
    python benchmarks/bench_liveness.py [--repeat 20] [--threads 2] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
PHOTOS = [
    "models/silentface/samples/image_F1.jpg",
    "models/silentface/samples/image_F2.jpg",
    "models/silentface/samples/image_T1.jpg",
    "data/images/inspireface/bulk/rgb_fake.jpg",
]


def _timed(fns: dict, repeat: int) -> dict:
    """``{name: (median ms, min ms)}``, the functions timed round-robin so that machine load hits all alike.

    On a shared machine the minimum is the better estimate of the uncontended cost.
    """
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000.0)
    return {name: (statistics.median(v), min(v)) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for the reference row")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench_liveness_"))
    os.environ["FACELAB_HOME"] = str(home)
    (home / "models" / "liveness").mkdir(parents=True)
    for name in ("2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth"):
        shutil.copyfile(SHARED / "models/silentface" / name, home / "models/liveness" / name)
    pack = home / "scrfd_pack"
    pack.mkdir()
    shutil.copyfile(SHARED / "models/insightface/det_500m.onnx", pack / "det_500m.onnx")

    from facelab.attributes.quality import face_quality
    from facelab.io.image import load_image
    from facelab.liveness import load_liveness
    from facelab.liveness.crop import silentface_crops
    from facelab.ops.normalize import to_tensor
    from facelab.pipeline import FaceAnalyzer
    from facelab.runtime.session import RuntimeOptions

    runtime = RuntimeOptions(providers="cpu", intra_op_threads=args.threads)
    detector_only = FaceAnalyzer(pack, modules=["detection"], runtime=runtime, home=home)
    images = [load_image(SHARED / p) for p in PHOTOS]
    faces = [(img, box, kps, score) for img in images for box, kps, score in zip(*_dets(detector_only, img))]
    runner = load_liveness(home=home, runtime=runtime, download=False)

    torch_models = None
    try:
        import torch

        sys.path.insert(0, str(HERE.parent / "tests"))
        from minifasnet_reference import load_reference

        torch.set_num_threads(args.torch_threads)
        torch_models = [
            (load_reference(SHARED / "models/silentface/2.7_80x80_MiniFASNetV2.pth", "v2"), 2.7),
            (load_reference(SHARED / "models/silentface/4_0_0_80x80_MiniFASNetV1SE.pth", "v1se"), 4.0),
        ]
    except ImportError:
        print("torch not installed: no torch reference row", file=sys.stderr)

    rows = []
    for n in (1, 8, 32):
        picked = [faces[i % len(faces)] for i in range(n)]
        imgs = [f[0] for f in picked]
        boxes = [f[1][None] for f in picked]
        tensors = [
            to_tensor(silentface_crops(imgs, boxes, m.crop_scale, m.input_size), m.card.normalization)
            for m in runner.models
        ]

        def bare(tensors=tensors):
            for m, t in zip(runner.models, tensors):
                m.session.run(t)

        fns = {
            "facelab": lambda imgs=imgs, boxes=boxes: runner.predict(imgs, boxes),
            "models": bare,
            "quality": lambda picked=picked: [face_quality(i, b, k, s) for i, b, k, s in picked],
        }
        row = {"n": n, **{k: (med / n, low / n) for k, (med, low) in _timed(fns, args.repeat).items()}}
        if torch_models is not None:

            def reference(imgs=imgs, boxes=boxes):
                with torch.no_grad():
                    for img, box in zip(imgs, boxes):
                        total = 0
                        for model, scale in torch_models:
                            crop = silentface_crops([img], [box], scale, 80)
                            x = torch.from_numpy(crop.transpose(0, 3, 1, 2).astype(np.float32))
                            total = total + torch.softmax(model(x), dim=1)

            med, low = _timed({"torch": reference}, max(3, args.repeat // 4))["torch"]
            row["torch"] = (med / n, low / n)
        rows.append(row)

    print(
        f"# liveness and quality, ms per face: median (min) of {args.repeat}; ONNX Runtime {args.threads} threads, "
        f"torch {args.torch_threads}; shared machine"
    )
    cols = ("facelab", "models", "torch", "quality")
    heads = ("facelab liveness", "of which models", "torch reference", "face_quality")
    print(f"{'faces/call':>10} " + " ".join(f"{h:>18}" for h in heads))
    for r in rows:
        cells = [f"{r[c][0]:8.2f} ({r[c][1]:6.2f})" if c in r else f"{'-':>18}" for c in cols]
        print(f"{r['n']:>10} " + " ".join(f"{c:>18}" for c in cells))

    with_liveness = FaceAnalyzer(pack, modules=["liveness"], runtime=runtime, home=home)
    print(f"\n# FaceAnalyzer.analyze per image, ms: median (min) of {args.repeat}, on/off interleaved")
    print("# (SCRFD-500M main pack; face.quality is filled in both)")
    print(f"{'image':>14} {'faces':>5} {'detection':>16} {'+ liveness':>16} {'overhead/face':>16}")
    for rel in ("models/silentface/samples/image_T1.jpg", "data/images/t1.jpg"):
        image = load_image(SHARED / rel)
        count = len(with_liveness.analyze(image))
        got = _timed(
            {
                "off": lambda image=image: detector_only.analyze(image),
                "on": lambda image=image: with_liveness.analyze(image),
            },
            args.repeat,
        )
        (off, off_min), (on, on_min) = got["off"], got["on"]
        per = f"{(on - off) / count:6.2f} ({(on_min - off_min) / count:5.2f})"
        print(f"{Path(rel).name:>14} {count:>5} {off:7.1f} ({off_min:6.1f}) {on:7.1f} ({on_min:6.1f}) {per:>16}")
    shutil.rmtree(home, ignore_errors=True)


def _dets(analyzer, image):
    d = analyzer.detect(image)
    return d.boxes, (d.kps if d.kps is not None else [None] * len(d)), d.scores


if __name__ == "__main__":
    main()
