"""Face clustering: quality of every algorithm on real and synthetic sets, then scale to 1M faces.

Quality (one run, same embeddings for every algorithm; the open pack, ``facelab.FaceAnalyzer()``):

* ``deepface``: every face of the 64 photos of ``../shared/data/verification/deepface`` is
  clustered (group photos give same-photo cannot-links); the 25 photos of ``master.csv`` are
  scored, identities = connected components of its positive pairs;
* ``RD``: ``../shared/data/images/inspireface/RD``, one person in 5 photos;
* ``synthetic``: 20,000 faces from the identity mixture fitted to the deepface faces' same- and
  different-person similarities (:func:`facelab.gallery.cluster.synthetic.fit_mixture`), 25 % of
  them in group photos.

Rows: immich's rule with immich's shipped settings (``maxDistance`` 0.5, ``minFaces`` 3) exactly
as immich runs it (no constraints) — the anchor — and through facelab's engine; every algorithm
with its pack-derived defaults; agglomerative without the photo rule. Columns: pairwise and
BCubed P/R/F, NMI, same-photo pairs in one person (all faces), seconds.

``--sweep`` adds the measurement the defaults were chosen from (strictness ``u`` per algorithm on
deepface and on a second synthetic draw). ``--neighbours`` compares the neighbour searches
(exact, numpy IVF, faiss, usearch: time and recall at 20k × 512).

Scale (``--scale 100000,1000000``; each size in its own process, for its own peak memory):
synthetic 512-d faces from the mixture refitted in 512 dimensions; kNN graph (exact below
``AUTO_EXACT_MAX``, else the numpy IVF index), the default algorithm, keys; then 1,000 new faces
added incrementally (exact search over the whole library, and through the IVF index).

Embeddings are computed by the run itself; ``--cache DIR`` reuses them (development only).

Usage:
    python benchmarks/bench_cluster.py [--sweep] [--neighbours] [--scale 100000,1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facelab.eval.report import format_table

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FACELAB_SHARED", HERE.parent.parent / "shared"))
DEEPFACE = SHARED / "data/verification/deepface"
RD = SHARED / "data/images/inspireface/RD"


# ---------------------------------------------------------------------------------------------- real sets


def _embed(paths: list[str], cache: Path | None, name: str):
    from facelab.eval.cluster import PhotoFaces, embed_photos

    if cache is not None and (cache / f"{name}.npz").exists():
        d = np.load(cache / f"{name}.npz", allow_pickle=False)
        return PhotoFaces(list(d["paths"]), d["image"], d["embeddings"], d["boxes"], d["main"]), 0.0
    import facelab

    t = time.perf_counter()
    faces = embed_photos(facelab.FaceAnalyzer(), paths)
    seconds = time.perf_counter() - t
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache / f"{name}.npz",
            paths=np.array(faces.paths),
            image=faces.image,
            embeddings=faces.embeddings,
            boxes=faces.boxes,
            main=faces.main,
        )
    return faces, seconds


def real_sets(cache: Path | None) -> tuple[list[dict], float]:
    """The deepface and RD sets: faces, the scored rows and their labels."""
    import facelab
    from facelab.eval.cluster import load_labels
    from facelab.eval.pairs import IMAGE_EXTENSIONS

    threshold = facelab.FaceAnalyzer(modules=["detection", "recognition"]).threshold
    labelled = load_labels(DEEPFACE / "master.csv")
    others = sorted(str(p) for p in DEEPFACE.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    paths = list(labelled.items) + [p for p in others if p not in set(labelled.items)]
    faces, seconds = _embed(paths, cache, "deepface")
    main = {faces.paths[int(i)]: r for r, i in enumerate(faces.image) if faces.main[r]}
    rows = np.array([main[p] for p in labelled.items])
    out = [
        {
            "name": "deepface",
            "faces": faces,
            "rows": rows,
            "labels": labelled.labels,
            "seconds": seconds,
            "photos": len(paths),
        }
    ]
    rd_paths = sorted(str(p) for p in RD.iterdir())
    rd, seconds = _embed(rd_paths, cache, "rd")
    rd_rows = np.flatnonzero(rd.main)
    out.append(
        {
            "name": "RD",
            "faces": rd,
            "rows": rd_rows,
            "labels": np.zeros(len(rd_rows), int),
            "seconds": seconds,
            "photos": len(rd_paths),
        }
    )
    return out, threshold


def synthetic_set(real: dict, n: int, seed: int, dim: int | None = None) -> tuple[dict, dict]:
    from facelab.eval.cluster import PhotoFaces
    from facelab.gallery.cluster.synthetic import fit_mixture, sample_library, similarity_stats

    faces = real["faces"]
    x = faces.embeddings[real["rows"]]
    model = fit_mixture(x, real["labels"], dim=dim)
    lib = sample_library(model, n, seed=seed)
    stats = {
        "model": model.to_dict(),
        "real": similarity_stats(x, real["labels"]),
        "synthetic": similarity_stats(lib.embeddings, lib.labels),
    }
    pf = PhotoFaces(
        [str(i) for i in range(int(lib.image_ids.max()) + 1)],
        lib.image_ids,
        lib.embeddings,
        np.zeros((n, 4), np.float32),
        np.ones(n, bool),
    )
    return {
        "name": "synthetic",
        "faces": pf,
        "rows": np.arange(n),
        "labels": lib.labels,
        "photos": len(pf.paths),
    }, stats


# ---------------------------------------------------------------------------------------------- quality


def _rows_for(threshold: float) -> list[tuple[str, str, dict, str]]:
    """(label, algorithm, params, mode) of the quality table; mode raw | engine | no-photo-rule."""
    return [
        ("immich, immich defaults, as immich (anchor)", "immich_defaults", {}, "raw"),
        ("immich, immich defaults, facelab engine", "immich_defaults", {}, "engine"),
        ("immich, pack-derived", "immich", {}, "engine"),
        ("photoprism defaults (dbscan 4, 0.64)", "photoprism_defaults", {}, "engine"),
        ("dbscan", "dbscan", {}, "engine"),
        ("hdbscan", "hdbscan", {}, "engine"),
        ("agglomerative", "agglomerative", {}, "engine"),
        ("chinese_whispers (default)", "chinese_whispers", {}, "engine"),
        ("chinese_whispers, no photo rule", "chinese_whispers", {}, "no-photo-rule"),
    ]


def _score(data: dict, labels: np.ndarray):
    from facelab.eval.cluster import cluster_metrics

    return cluster_metrics(data["labels"], labels[data["rows"]], all_pred=labels, image_ids=data["faces"].image)


def run_quality(sets: list[dict], threshold: float, out: dict) -> None:
    from facelab.gallery.cluster import build_knn, make_clusterer, recluster

    rows = []
    for data in sets:
        fs = data["faces"].face_set()
        graph = build_knn(fs.embeddings, k=16)
        for label, algorithm, params, mode in _rows_for(threshold):
            t = time.perf_counter()
            if mode == "raw":
                labels = make_clusterer(algorithm, threshold, **params).fit(graph)
            else:
                result = recluster(
                    fs,
                    algorithm=algorithm,
                    threshold=threshold,
                    params=params or None,
                    graph=graph,
                    same_image=mode != "no-photo-rule",
                )
                labels = result.labels()
            seconds = time.perf_counter() - t
            m = _score(data, labels)
            rows.append(
                [
                    data["name"],
                    label,
                    m.clusters,
                    m.pairwise_precision,
                    m.pairwise_recall,
                    m.pairwise_f,
                    m.bcubed_precision,
                    m.bcubed_recall,
                    m.bcubed_f,
                    m.nmi,
                    m.same_image_pairs,
                    seconds,
                ]
            )
            out.setdefault("quality", []).append(
                {
                    "set": data["name"],
                    "row": label,
                    "algorithm": algorithm,
                    "mode": mode,
                    "seconds": seconds,
                    **m.to_dict(),
                }
            )
    print(
        format_table(
            rows,
            [
                "set",
                "algorithm",
                "clusters",
                "pair P",
                "pair R",
                "pair F",
                "BCubed P",
                "BCubed R",
                "BCubed F",
                "NMI",
                "same-photo",
                "s",
            ],
        )
    )


def run_sweep(sets: list[dict], threshold: float, out: dict) -> None:
    """BCubed F per strictness u: the measurement behind the pack-derived defaults."""
    from facelab.gallery.cluster import build_knn, merge_cosine, recluster

    grid = {
        "immich": ("max_distance", [0.0, 1 / 6, 0.3], [{}]),
        "dbscan": ("min_sim", [0.1, 0.25, 0.35, 0.45], [{"min_samples": 2}, {"min_samples": 3}]),
        "hdbscan": ("min_sim", [0.2, 0.3, 0.4, 0.5], [{"min_samples": 1}, {"min_samples": 2}]),
        "agglomerative": ("min_link", [0.0, 0.1, 0.2, 0.3, 0.4], [{}]),
        "chinese_whispers": ("min_sim", [0.15, 0.25, 0.3, 0.35, 0.45], [{}]),
    }
    graphs = [build_knn(d["faces"].embeddings, k=16) for d in sets]
    rows = []
    for algorithm, (name, us, extras) in grid.items():
        for extra, u in ((e, u) for e in extras for u in us):
            s = merge_cosine(threshold, u)
            params = {name: 1 - s if name == "max_distance" else s, **extra}
            row = [algorithm, f"{u:+.3f}", json.dumps(extra)]
            for data, graph in zip(sets, graphs):
                res = recluster(
                    data["faces"].face_set(), algorithm=algorithm, threshold=threshold, params=params, graph=graph
                )
                m = _score(data, res.labels())
                row += [m.pairwise_f, m.bcubed_f]
                out.setdefault("sweep", []).append(
                    {"algorithm": algorithm, "u": u, "set": data["name"], "params": params, **m.to_dict()}
                )
            rows.append(row)
    header = ["algorithm", "u", "extra"]
    for d in sets:
        header += [f"{d['name']} pair F", f"{d['name']} BCubed F"]
    print(format_table(rows, header))


def run_neighbours(out: dict, n: int = 20000) -> None:
    import importlib.util

    from facelab.gallery.cluster import build_knn
    from facelab.gallery.cluster.knn import exact_search
    from facelab.gallery.cluster.synthetic import MixtureModel, sample_library

    model = MixtureModel(
        dim=512, common=0.8354, identity=0.1402, noise=0.02435, identity_spread=0.419, image_spread=0.5325
    )
    x = sample_library(model, n, seed=7).embeddings
    rng = np.random.default_rng(0)
    probe = rng.choice(n, 500, replace=False)
    ref, ref_sim = exact_search(x, x[probe], 16, exclude=probe)
    rows = []
    for backend in ("exact", "ivf", "faiss", "usearch"):
        if backend in ("faiss", "usearch") and importlib.util.find_spec(backend) is None:
            rows.append([backend, "not installed", "", "", ""])
            continue
        t = time.perf_counter()
        g = build_knn(x, 16, backend=backend, recall_sample=0)
        seconds = time.perf_counter() - t
        rec = np.mean([np.isin(ref[i], g.indices[r]).mean() for i, r in enumerate(probe)])
        edge = [
            np.isin(ref[i][ref_sim[i] >= 0.93], g.indices[r]).mean()
            for i, r in enumerate(probe)
            if (ref_sim[i] >= 0.93).any()
        ]
        rows.append([backend, seconds, float(rec), float(np.mean(edge)), g.info.get("index").__class__.__name__])
        out.setdefault("neighbours", []).append(
            {
                "backend": backend,
                "seconds": seconds,
                "recall@16": float(rec),
                "edge_recall@0.93": float(np.mean(edge)),
                "n": n,
            }
        )
    print(format_table(rows, ["backend", "seconds", "recall@16", "recall of edges >= 0.93", "index"]))


# ---------------------------------------------------------------------------------------------- scale


def _peak_mb() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` survives ``exec`` from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale_worker(n: int, model_json: str, threshold: float, n_new: int, seed: int, others: list[str]) -> dict:
    """One library size in this process: build, cluster, add ``n_new`` faces; returns the measurements."""
    from facelab.eval.cluster import cluster_metrics
    from facelab.gallery.cluster import FaceSet, add_faces, recluster
    from facelab.gallery.cluster.knn import AUTO_EXACT_MAX, build_knn
    from facelab.gallery.cluster.synthetic import MixtureModel, sample_library

    model = MixtureModel(**json.loads(model_json))
    out: dict = {"n": n, "dim": model.dim}
    t0 = time.perf_counter()
    lib = sample_library(model, n + n_new, seed=seed)
    out["generate_s"] = time.perf_counter() - t0
    base = FaceSet(np.arange(n), lib.embeddings[:n], lib.image_ids[:n])
    backend = "exact" if n <= AUTO_EXACT_MAX else "ivf"
    cpu, t = time.process_time(), time.perf_counter()
    graph = build_knn(base.embeddings, k=16, backend=backend, recall_sample=0)
    out["knn"] = {"backend": backend, "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - cpu}
    if backend != "exact":  # recall against exact search on 500 faces (not part of the timings)
        from facelab.gallery.cluster import graph_recall, make_clusterer

        edge = make_clusterer("default", threshold).attach_sim
        out["knn"]["recall@16"] = graph_recall(graph, base.embeddings, 500)
        out["knn"]["edge_recall"] = graph_recall(graph, base.embeddings, 500, min_sim=edge)
        out["knn"]["edge_min_sim"] = edge
    cpu, t = time.process_time(), time.perf_counter()
    result = recluster(base, threshold=threshold, graph=graph)
    out["cluster_s"] = time.perf_counter() - t
    out["total_s"] = out["knn"]["seconds"] + out["cluster_s"]
    out["total_cpu_s"] = out["knn"]["cpu_s"] + time.process_time() - cpu
    m = cluster_metrics(lib.labels[:n], result.labels(), image_ids=base.image_ids)
    out["metrics"] = m.to_dict()
    out["algorithm"] = result.info["params"]
    out["peak_rss_mb_after_clustering"] = _peak_mb()
    for name in others:  # other algorithms on the same graph (quality and time only)
        t = time.perf_counter()
        other = recluster(base, algorithm=name, threshold=threshold, graph=graph)
        seconds = time.perf_counter() - t
        mo = cluster_metrics(lib.labels[:n], other.labels(), image_ids=base.image_ids)
        out.setdefault("others", []).append({"algorithm": name, "cluster_s": seconds, "metrics": mo.to_dict()})
    library = result.apply(base)
    full = FaceSet(
        np.arange(n + n_new), lib.embeddings, lib.image_ids, np.r_[library.persons, np.full(n_new, -1, np.int64)]
    )
    del library, base
    new = np.r_[np.zeros(n, bool), np.ones(n_new, bool)]
    seen = np.isin(lib.labels[n:], lib.labels[:n])
    # the person that holds most faces of each identity: where a new face of it should go
    has = full.persons[:n] >= 0
    pairs, counts = np.unique(np.stack([lib.labels[:n][has], full.persons[:n][has]], 1), axis=0, return_counts=True)
    majority = np.full(int(lib.labels.max()) + 1, -2, np.int64)
    order = np.lexsort((-counts, pairs[:, 0]))
    first = np.r_[True, pairs[order, 0][1:] != pairs[order, 0][:-1]]
    majority[pairs[order, 0][first]] = pairs[order, 1][first]
    for mode in ("exact", "ivf"):
        if mode == "ivf" and "index" not in graph.info:
            continue
        index = graph.info["index"] if mode == "ivf" else None
        cpu, t = time.process_time(), time.perf_counter()
        added = add_faces(full, new, threshold=threshold, index=index)
        seconds = time.perf_counter() - t
        joined = added.persons[n:] >= 0
        right = added.persons[n:][joined] == majority[lib.labels[n:][joined]] if len(majority) else np.zeros(0, bool)
        out[f"add_{n_new}_{mode}"] = {
            "seconds": seconds,
            "cpu_s": time.process_time() - cpu,
            "of_known_identities": int(seen.sum()),
            "joined": int(joined.sum()),
            "joined_correct": int(right.sum()) if len(right) else 0,
            "joined_known_share": float(joined[seen].mean()) if seen.any() else None,
            "new_people": int(added.n_new),
        }
    out["peak_rss_mb"] = _peak_mb()
    return out


def run_scale(sizes: list[int], real: dict, threshold: float, out: dict, n_new: int, others: list[str]) -> None:
    from facelab.gallery.cluster.synthetic import fit_mixture

    model = fit_mixture(real["faces"].embeddings[real["rows"]], real["labels"], dim=512)
    out["scale_model"] = model.to_dict()
    rows: list[list] = []
    adds: list[list] = []
    for n in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--scale-worker",
            str(n),
            "--model",
            json.dumps(model.to_dict()),
            "--threshold",
            str(threshold),
            "--new",
            str(n_new),
            "--others",
            ",".join(others),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"scale {n}: worker failed:\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out.setdefault("scale", []).append(r)
        knn = r["knn"]
        m = r["metrics"]
        rows.append(
            [
                n,
                r["algorithm"]["algorithm"] + " (default)",
                knn["backend"],
                knn["seconds"],
                knn.get("recall@16", 1.0),
                knn.get("edge_recall", 1.0),
                r["cluster_s"],
                r["total_s"],
                r["total_cpu_s"],
                r["peak_rss_mb"],
                m["pairwise_f"],
                m["bcubed_f"],
                m["same_image_pairs"],
            ]
        )
        for o in r.get("others", []):
            mo = o["metrics"]
            rows.append(
                [
                    n,
                    o["algorithm"],
                    "same graph",
                    "",
                    "",
                    "",
                    o["cluster_s"],
                    "",
                    "",
                    "",
                    mo["pairwise_f"],
                    mo["bcubed_f"],
                    mo["same_image_pairs"],
                ]
            )
        for mode in ("exact", "ivf"):
            add = r.get(f"add_{n_new}_{mode}")
            if add is not None:
                adds.append(
                    [
                        n,
                        n_new,
                        mode,
                        add["seconds"],
                        add["cpu_s"],
                        add["of_known_identities"],
                        add["joined"],
                        add["joined_correct"],
                        add["new_people"],
                    ]
                )
    print(
        format_table(
            rows,
            [
                "faces",
                "algorithm",
                "kNN",
                "kNN s",
                "recall@16",
                "edge recall",
                "cluster s",
                "kNN+cluster s",
                "CPU s",
                "peak MB",
                "pair F",
                "BCubed F",
                "same-photo",
            ],
        )
    )
    print()
    print(
        format_table(
            adds,
            [
                "library",
                "new faces",
                "search",
                "seconds",
                "CPU s",
                "of known people",
                "joined",
                "joined the right person",
                "new people",
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="store_true", help="also print the strictness sweep behind the defaults")
    parser.add_argument("--neighbours", action="store_true", help="also compare the neighbour searches at 20k")
    parser.add_argument("--scale", default="", help="comma-separated library sizes, e.g. 100000,1000000")
    parser.add_argument("--new", type=int, default=1000, help="faces added incrementally to each scale library")
    parser.add_argument("--others", default="", help="other algorithms to cluster each scale library with")
    parser.add_argument("--synthetic", type=int, default=20000, help="faces of the synthetic quality set")
    parser.add_argument("--skip-quality", action="store_true", help="no quality tables")
    parser.add_argument("--cache", default=None, help="reuse embeddings from this folder (development only)")
    parser.add_argument("--json", default=None, help="write every number as JSON")
    parser.add_argument("--scale-worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=float, default=0.923, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.scale_worker:
        others = [a for a in args.others.split(",") if a]
        print(json.dumps(scale_worker(args.scale_worker, args.model, args.threshold, args.new, 1, others)))
        return 0
    os.environ.setdefault("FACELAB_HOME", "/tmp/facelab-bench-cluster-home")
    out: dict = {"cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}
    cache = Path(args.cache) if args.cache else None
    t = time.perf_counter()
    sets, threshold = real_sets(cache)
    out["threshold"] = threshold
    for d in sets:
        print(
            f"{d['name']}: {d['photos']} photos, {len(d['faces'])} faces, {len(d['rows'])} scored, "
            f"embedded in {d['seconds']:.1f} s"
        )
    syn, stats = synthetic_set(sets[0], args.synthetic, seed=1)
    out["synthetic_fit"] = stats
    print(
        "similarity of same / different people (mean ± std): real {:.4f} ± {:.4f} / {:.4f} ± {:.4f}; "
        "synthetic {:.4f} ± {:.4f} / {:.4f} ± {:.4f}".format(
            stats["real"]["same"]["mean"],
            stats["real"]["same"]["std"],
            stats["real"]["different"]["mean"],
            stats["real"]["different"]["std"],
            stats["synthetic"]["same"]["mean"],
            stats["synthetic"]["same"]["std"],
            stats["synthetic"]["different"]["mean"],
            stats["synthetic"]["different"]["std"],
        )
    )
    print(f"pack threshold (open pack): {threshold}\n")
    if not args.skip_quality:
        run_quality([*sets, syn], threshold, out)
        print()
    if args.sweep:
        tune, _ = synthetic_set(sets[0], args.synthetic, seed=2)  # another draw than the quality set
        tune["name"] = "synthetic-2"
        run_sweep([sets[0], sets[1], tune], threshold, out)
        print()
    if args.neighbours:
        run_neighbours(out)
        print()
    if args.scale:
        others = [a for a in args.others.split(",") if a]
        run_scale([int(s) for s in args.scale.split(",") if s], sets[0], threshold, out, args.new, others)
    out["wall_s"] = time.perf_counter() - t
    out["load_average_end"] = os.getloadavg()
    print(
        f"\nwall {out['wall_s']:.0f} s; load average {out['load_average_start']} -> {out['load_average_end']} "
        f"on {os.cpu_count()} cores (shared machine)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
