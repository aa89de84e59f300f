"""IJB-C-sized 1:1 evaluation from synthetic precomputed features: time and peak memory per stage.

Sizes default to IJB-C's: 469,375 face features (512-d float32), 23,124 templates, 3,531
subjects, 15,658,489 template pairs (19,557 genuine). Features are subject centres plus noise so
the scores are realistic; templates get faces from one to several media.

Run:  python benchmarks/bench_ijbc_scale.py            (full size; heavy: ~1 GB of features)
      python benchmarks/bench_ijbc_scale.py --scale 0.01   (quick check)

Peak memory is the process's maximum resident set size (``resource.getrusage``), which includes
the synthetic features; ``--tracemalloc`` also reports Python/numpy's traced peak per stage
(slower).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np

from facelab.eval.ijb import evaluate_ijb_11, template_features, template_pair_scores
from facelab.eval.report import format_table

FACES, TEMPLATES, SUBJECTS, PAIRS, GENUINE, DIM = 469_375, 23_124, 3_531, 15_658_489, 19_557, 512


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_faces, n_t = max(int(FACES * scale), 50), max(int(TEMPLATES * scale), 20)
    n_s, n_pairs, n_gen = max(int(SUBJECTS * scale), 5), max(int(PAIRS * scale), 200), max(int(GENUINE * scale), 20)
    subject_of_t = np.r_[np.arange(n_s), rng.integers(0, n_s, n_t - n_s)]
    # every template gets one face, the rest are spread at random
    face_t = np.r_[np.arange(n_t), rng.integers(0, n_t, n_faces - n_t)]
    rng.shuffle(face_t)
    medias = face_t * 8 + rng.integers(0, 4, n_faces)  # up to 4 media per template
    centres = rng.standard_normal((n_s, DIM), dtype=np.float32)
    feats = np.empty((n_faces, DIM), np.float32)
    for s in range(0, n_faces, 65536):
        block = face_t[s : s + 65536]
        feats[s : s + len(block)] = centres[subject_of_t[block]] + 3.0 * rng.standard_normal(
            (len(block), DIM), dtype=np.float32
        )
    faceness = rng.uniform(0.5, 1.0, n_faces).astype(np.float32)
    # genuine pairs: templates of one subject; impostors: random templates of different subjects
    by_subject = np.argsort(subject_of_t, kind="stable")
    starts = np.searchsorted(subject_of_t[by_subject], np.arange(n_s))
    counts = np.bincount(subject_of_t, minlength=n_s)
    multi = np.flatnonzero(counts >= 2)
    s_pick = multi[rng.integers(0, len(multi), n_gen)]
    a = rng.integers(0, counts[s_pick])
    b = (a + 1 + rng.integers(0, counts[s_pick] - 1)) % counts[s_pick]
    g1, g2 = by_subject[starts[s_pick] + a], by_subject[starts[s_pick] + b]
    n_imp = n_pairs - n_gen
    i1, i2 = rng.integers(0, n_t, n_imp), rng.integers(0, n_t, n_imp)
    clash = subject_of_t[i1] == subject_of_t[i2]
    i2[clash] = (i2[clash] + 1) % n_t
    still = subject_of_t[i1] == subject_of_t[i2]
    i1, i2 = i1[~still], i2[~still]
    t1 = np.r_[g1, i1].astype(np.int64)
    t2 = np.r_[g2, i2].astype(np.int64)
    label = np.r_[np.ones(len(g1), np.int64), np.zeros(len(i1), np.int64)]
    return {
        "feats": feats,
        "templates": face_t.astype(np.int64),
        "medias": medias.astype(np.int64),
        "faceness": faceness,
        "t1": t1,
        "t2": t2,
        "label": label,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's sizes (default 1)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="pair dot-product type")
    parser.add_argument("--method", choices=["auto", "gather", "gram"], default="auto", help="pair scoring method")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace numpy's peak allocation per stage")
    args = parser.parse_args(argv)

    rows = []

    def stage(name: str, fn):  # noqa: ANN001, ANN202
        if args.tracemalloc:
            tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        traced = ""
        if args.tracemalloc:
            traced = f"{tracemalloc.get_traced_memory()[1] / 2**20:.0f}"
            tracemalloc.stop()
        rows.append([name, f"{dt:.1f}", f"{_rss_mb():.0f}", traced])
        return out

    t_start = time.perf_counter()
    data = stage("synthetic data", lambda: make_data(args.scale))
    n_faces, n_pairs = len(data["feats"]), len(data["t1"])
    t_eval = time.perf_counter()
    tids, tfeats = stage(
        "template pooling",
        lambda: template_features(data["feats"], data["templates"], data["medias"], data["faceness"]),
    )
    scores = stage(
        "pair scores",
        lambda: template_pair_scores(
            tids,
            tfeats,
            data["t1"],
            data["t2"],
            method=args.method,
            dtype=np.float32 if args.dtype == "float32" else np.float64,
        ),
    )
    result = stage("ROC, TAR@FAR, AUC", lambda: evaluate_ijb_11(scores, data["label"]))
    eval_time = time.perf_counter() - t_eval
    rows.append(["evaluation total (no data generation)", f"{eval_time:.1f}", f"{_rss_mb():.0f}", ""])
    rows.append(["wall total", f"{time.perf_counter() - t_start:.1f}", "", ""])
    sys.stdout.write(
        f"faces {n_faces:,}  templates {len(tids):,}  pairs {n_pairs:,} ({int(data['label'].sum()):,} genuine)  "
        f"dim {DIM}  pair dtype {args.dtype}, method {args.method}\n"
    )
    sys.stdout.write(format_table(rows, header=["stage", "seconds", "peak RSS MB", "traced peak MB"]) + "\n")
    sys.stdout.write(
        "TAR@FAR (closest ROC point): " + ", ".join(f"{k}: {v:.4f}" for k, v in result["tar_at_far"].items()) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
