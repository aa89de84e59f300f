"""InsightFace's ``FaceAnalysis.get`` vs facelab's drop-in ``facelab.compat.insightface``, same files, one run.

Both libraries load the same pack folder (InsightFace's ``<root>/models/<name>/`` layout) and run
``app.get(img)`` on the same images, timed round-robin (median of ``--repeat``):

* ``t1.jpg`` (6 faces) and a 4-photo mosaic of dlib's VOC group photos (the crowd of
  ``bench_pipeline.py``);
* the pack: a real InsightFace SCRFD detector from ``../shared/models/insightface`` (``--det``),
  an IResNet-50 recogniser with ``w600k_r50.onnx``'s layer shapes and random weights (its compute
  is real, its embeddings are not; ``_iresnet_onnx.py``) and, unless ``--det-rec-only``, tiny
  models with the signatures of ``2d106det``, ``1k3d68`` and ``genderage`` (from the test suite's
  ``tests/onnx_builders.py``; InsightFace's weights for those are not available here), which
  measure each library's per-face overhead rather than those models' compute.

The table also reports how far the two results are apart (largest box difference, smallest
cosine similarity of the embeddings), so a speed-up never hides a different answer.

Usage:
    python benchmarks/bench_compat.py [--repeat 7] [--det det_2.5g.onnx] [--det-size 640] [--det-rec-only]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
SHARED = HERE.parent.parent / "shared"


def _build_pack(folder: Path, det: str, det_rec_only: bool) -> None:
    from _iresnet_onnx import build_iresnet50

    folder.mkdir(parents=True)
    os.symlink(SHARED / "models" / "insightface" / det, folder / det)
    build_iresnet50(str(folder / "w600k_r50.onnx"))
    if not det_rec_only:
        from onnx_builders import build_genderage, build_landmark_2d106, build_landmark_3d68

        build_landmark_2d106(folder / "2d106det.onnx")
        build_landmark_3d68(folder / "1k3d68.onnx")
        build_genderage(folder / "genderage.onnx")


def _agreement(ours: list, theirs: list) -> tuple[float, float]:
    """(largest box difference in px, smallest embedding cosine) between two face lists."""
    if len(ours) != len(theirs) or not ours:
        return float("nan"), float("nan")
    box = max(float(np.abs(a.bbox - b.bbox).max()) for a, b in zip(ours, theirs))
    cos = min(float(a.normed_embedding @ b.normed_embedding) for a, b in zip(ours, theirs))
    return box, cos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--det", default="det_2.5g.onnx", help="detector file under shared/models/insightface")
    parser.add_argument("--det-size", type=int, default=640, help="square detector size (0 = Auto 128+640)")
    parser.add_argument("--det-rec-only", action="store_true", help="pack of detector + recogniser only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-image, inside insightface

    import cv2
    from bench_pipeline import _crowd_mosaic, _interleaved_medians

    import facelab.compat.insightface as compat

    try:
        import insightface
    except ImportError:
        sys.exit("this benchmark compares with the insightface package: pip install --no-deps insightface==2.1")

    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-compat-"))
    meanshape = SHARED / "data" / "landmarks" / "meanshape_68.pkl"
    os.environ.setdefault("FACELAB_MEANSHAPE_68", str(meanshape))
    os.environ.setdefault("FACELAB_HOME", str(tmp / "facelab_home"))
    _build_pack(tmp / "models" / "benchpack", args.det, args.det_rec_only)
    det_size = (args.det_size, args.det_size) if args.det_size else None
    apps = {}
    for label, module in (("insightface", insightface), ("facelab", compat)):
        app = module.app.FaceAnalysis(name="benchpack", root=str(tmp), providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=-1, det_size=det_size)
        apps[label] = app

    images = [("t1.jpg", cv2.imread(str(SHARED / "data/images/t1.jpg"))), ("mosaic (4 VOC photos)", _crowd_mosaic(cv2))]
    rows = []
    for label, img in images:
        calls = {name: (lambda app=app, img=img: app.get(img)) for name, app in apps.items()}
        t = _interleaved_medians(calls, args.repeat)
        ours, theirs = apps["facelab"].get(img), apps["insightface"].get(img)
        rows.append((label, len(ours), len(theirs), t["insightface"], t["facelab"], *_agreement(ours, theirs)))

    tasks = ", ".join(apps["facelab"].models)
    print(
        f"app.get: insightface {insightface.__version__} vs facelab.compat.insightface; detector {args.det}, "
        f"det size {det_size or 'Auto 128+640'}; models: {tasks}; median of {args.repeat}, CPU"
    )
    header = (
        f"{'image':22} {'faces':>7} {'insightface ms':>15} {'facelab ms':>11} {'speed-up':>9} {'max box diff':>13}"
        f" {'min cos':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, n_ours, n_theirs, t_ins, t_fl, box, cos in rows:
        faces = f"{n_ours}" if n_ours == n_theirs else f"{n_ours}/{n_theirs}"
        print(
            f"{label:22} {faces:>7} {t_ins * 1e3:15.1f} {t_fl * 1e3:11.1f} {t_ins / t_fl:8.2f}x {box:13.2e} {cos:9.6f}"
        )
    print("speed-up = insightface time / facelab time; max box diff in px; min cos = smallest cosine similarity")
    print("between the two libraries' embeddings of the same face (1 = identical).")


if __name__ == "__main__":
    main()
