"""facelab vs insightface: detection + recognition per image, next to the bare model time.

Runs in one process, on the same ONNX files and the same images:

* a real InsightFace SCRFD detector from ``../shared/models/insightface`` (``--det``),
* an IResNet-50 recogniser (112x112 -> 512, the shape of ``w600k_r50.onnx``) that this script
  builds itself with random weights (speed is real, embeddings are not).

For each image it reports the median wall time of ``FaceAnalyzer.analyze`` (facelab),
``FaceAnalysis.get`` (insightface), and the "bare" time: one detector ``session.run`` on the
prepared blob plus one batched recogniser ``session.run`` on all faces' prepared crops — the
floor any wrapper can reach. Also detection alone for both libraries.

Usage:
    python benchmarks/bench_pipeline.py [--repeat 7] [--det det_2.5g.onnx] [--det-size 640]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = HERE.parent.parent / "shared"

IMAGES = [
    ("t1.jpg", "data/images/t1.jpg"),
    ("couple.jpg", "data/verification/deepface/couple.jpg"),
    ("selfie-many-people.jpg", "data/verification/deepface/selfie-many-people.jpg"),
]
#: A crowd: four VOC group photos from dlib's examples side by side (no 20+ face photo is shared).
CROWD = [
    "data/detection/dlib_faces/2008_002079.jpg",
    "data/detection/dlib_faces/2008_004176.jpg",
    "data/detection/dlib_faces/2007_007763.jpg",
    "data/detection/dlib_faces/2008_007676.jpg",
]


def _crowd_mosaic(cv2) -> np.ndarray:
    tiles = [cv2.imread(str(SHARED / rel)) for rel in CROWD]
    height = max(t.shape[0] for t in tiles)
    padded = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    return np.hstack(padded)


def _interleaved_medians(fns: dict, repeat: int) -> dict:
    """Median seconds of each function, timed round-robin so that machine drift hits all alike.

    A pause after each call lets ONNX Runtime's spinning threads of one library go idle before
    the next library is timed.
    """
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    names = list(fns)
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(0.05)
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--det", default="det_2.5g.onnx", help="detector file under shared/models/insightface")
    parser.add_argument("--det-size", type=int, default=640, help="fixed square detector size (0 = auto 128+640)")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads for both libraries (0 = default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import cv2
    import onnxruntime as ort
    from _iresnet_onnx import build_iresnet50

    from facelab import FaceAnalyzer
    from facelab.alignment.transform import norm_crop_batch
    from facelab.ops.boxes import letterbox
    from facelab.ops.normalize import INSIGHTFACE_ARCFACE, INSIGHTFACE_DETECTOR, to_tensor
    from facelab.runtime import RuntimeOptions

    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-"))
    pack = tmp / "models" / "benchpack"
    pack.mkdir(parents=True)
    (pack / args.det).symlink_to(SHARED / "models" / "insightface" / args.det)
    build_iresnet50(str(pack / "w600k_r50_random.onnx"))

    det_size = None if args.det_size == 0 else (args.det_size, args.det_size)
    threads = args.threads or None
    runtime = RuntimeOptions(providers=["cpu"], intra_op_threads=threads)
    fl = FaceAnalyzer(pack, modules=["detection", "recognition"], det_size=det_size, runtime=runtime)

    import insightface
    from insightface.app import FaceAnalysis

    ins = FaceAnalysis(
        name="benchpack",
        root=str(tmp),
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
    )
    ins.prepare(ctx_id=-1, det_size=det_size if det_size else None)

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    # Bare sessions twice: with ONNX Runtime's defaults (what insightface uses) and with intra-op
    # spinning off (facelab's default, see RuntimeOptions.allow_spinning).
    bare_sessions = {}
    for label, spin in (("default", "1"), ("nospin", "0")):
        so_b = ort.SessionOptions()
        if threads:
            so_b.intra_op_num_threads = threads
        so_b.add_session_config_entry("session.intra_op.allow_spinning", spin)
        bare_sessions[label] = (
            ort.InferenceSession(str(pack / args.det), so_b, providers=["CPUExecutionProvider"]),
            ort.InferenceSession(str(pack / "w600k_r50_random.onnx"), so_b, providers=["CPUExecutionProvider"]),
        )
    sizes = [det_size] if det_size else [(128, 128), (640, 640)]

    rows = []
    inputs = [(label, cv2.imread(str(SHARED / rel))) for label, rel in IMAGES]
    inputs.append(("crowd (4 VOC photos)", _crowd_mosaic(cv2)))
    for label, img in inputs:
        faces = fl.analyze(img)
        n = len(faces)
        blobs = [to_tensor(letterbox(img, s)[0], INSIGHTFACE_DETECTOR) for s in sizes]
        kps = np.stack([f.kps for f in faces]) if n else np.zeros((0, 5, 2), np.float32)
        crops = to_tensor(norm_crop_batch(img, kps, 112), INSIGHTFACE_ARCFACE) if n else None

        def bare(kind: str, blobs: list = blobs, crops: np.ndarray | None = crops) -> None:
            det_sess, rec_sess = bare_sessions[kind]
            for blob in blobs:
                det_sess.run(None, {det_sess.get_inputs()[0].name: blob})
            if crops is not None:
                rec_sess.run(None, {"input.1": crops})

        t = _interleaved_medians(
            {
                "bare": lambda: bare("default"),
                "bare_ns": lambda: bare("nospin"),
                "facelab": lambda img=img: fl.analyze(img),
                "insightface": lambda img=img: ins.get(img),
                "facelab_det": lambda img=img: fl.detect(img),
                "insightface_det": lambda img=img: ins.det_model.detect(img, max_num=0, metric="default"),
            },
            args.repeat,
        )
        t_bare, t_bare_ns, t_fl, t_ins = t["bare"], t["bare_ns"], t["facelab"], t["insightface"]
        t_fl_det, t_ins_det = t["facelab_det"], t["insightface_det"]
        n_ins = len(ins.get(img))
        rows.append((label, n, n_ins, t_bare, t_bare_ns, t_fl, t_ins, t_fl_det, t_ins_det))

    print(
        f"insightface {insightface.__version__}, detector {args.det}, det size {det_size or 'auto 128+640'}, "
        f"recogniser IResNet-50 (random weights), median of {args.repeat}, CPU"
    )
    header = (
        f"{'image':22} {'faces':>5} {'bare ms':>8} {'bare-ns':>8} {'facelab':>8} {'/bare':>6} {'/bare-ns':>8}"
        f" {'insight':>8} {'/bare':>6} {'det fl':>7} {'det ins':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, n, n_ins, t_bare, t_bare_ns, t_fl, t_ins, t_fl_det, t_ins_det in rows:
        faces = f"{n}" if n == n_ins else f"{n}/{n_ins}"
        print(
            f"{label:22} {faces:>5} {t_bare * 1e3:8.1f} {t_bare_ns * 1e3:8.1f} {t_fl * 1e3:8.1f} {t_fl / t_bare:6.3f}"
            f" {t_fl / t_bare_ns:8.3f} {t_ins * 1e3:8.1f} {t_ins / t_bare:6.3f}"
            f" {t_fl_det * 1e3:7.1f} {t_ins_det * 1e3:7.1f}"
        )
    print("bare = one detector run per size + one batched recogniser run (ORT defaults); bare-ns = the same with")
    print("intra-op spinning off (facelab's default). Times in ms; det = detection alone.")


if __name__ == "__main__":
    main()
