"""Exact and approximate 1:N face search: facelab's indexes next to NumPy and FAISS in one process.

Data: ``--n`` synthetic unit vectors × ``--dim`` with an identity structure, like a face gallery:
``--persons`` random unit centres, each face ``normalise(centre + 0.03 · noise)`` (face-to-face
cosine ≈ 0.68 within a person, ≈ 0 across), rows grouped by person. Queries are new faces of
random known persons ("identity" queries); a second set of random unit vectors ("random"
queries) has no true match, so its top 10 are near-ties of the background: the hard case for
quantised search.

Reported (milliseconds per query; one query at a time, and batches of ``--batch``):

* exact top-10 by vector: NumPy's bare FP32 product (``D @ q``, no top-k: the floor), FAISS
  ``IndexFlatIP`` (when ``faiss-cpu`` is installed), ONNX Runtime's bare ``MatMulInteger`` INT8
  product (the kernel the issue suggested; the database is a graph input), facelab ``ExactIndex``
  FP32 / FP16 / INT8;
* exact top-10 persons (``search_groups``), next to the alternative of a per-person max with
  ``np.maximum.reduceat`` over the group-sorted FP32 scores;
* recall@10 of FP16 and INT8 against FP32 (both query sets);
* memory per million faces per precision (vectors + ids + groups; the id map is measured as RSS);
* HNSW (``AnnIndex``, usearch) on the first ``--ann-n`` faces: build time, recall@10 against exact
  FP32 (``recall_report``) and queries/s at a few ``ef_search`` values.

Timings are medians over ``--repeat`` runs, interleaved across methods so that the load of a
shared machine hits all alike. The load average is printed before and after.

Usage:
    python benchmarks/bench_gallery_search.py [--n 1000000] [--dim 512] [--batch 32] [--ann-n 50000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from facelab.gallery.search import AnnIndex, ExactIndex, quantize_int8, recall_at_k


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_faces(n: int, dim: int, persons: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces ``(n, dim)`` float32 (row i belongs to person ``i * persons // n``), centres, groups."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((persons, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    groups = (np.arange(n, dtype=np.int64) * persons) // n
    faces = np.empty((n, dim), np.float32)
    step = 65536
    for a in range(0, n, step):
        block = centres[groups[a : a + step]] + 0.03 * rng.standard_normal((min(step, n - a), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        faces[a : a + step] = block
    return faces, centres, groups


def new_faces(centres: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    who = rng.choice(len(centres), count, replace=False)
    q = centres[who] + 0.03 * rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def random_units(count: int, dim: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def interleaved(fns: dict[str, callable], repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def ort_int8_product(dim: int):
    """ONNX Runtime's ``MatMulInteger`` (the database as input A, uint8 with zero point 128): a callable or None.

    The database is a graph input (not an initialiser), so it is not copied into the session.
    """
    try:
        import onnxruntime as ort

        from facelab.convert import GraphBuilder
    except ImportError:
        return None
    g = GraphBuilder("the INT8 benchmark graph")
    tp = g.onnx.TensorProto
    zero = g.const("a_zero_point", np.array(128, np.uint8))
    y = g.node("MatMulInteger", ["db", "queries_t", zero], "dots")
    graph = g.helper.make_graph(
        g.nodes,
        "int8_dots",
        [
            g.helper.make_tensor_value_info("db", tp.UINT8, ["n", dim]),
            g.helper.make_tensor_value_info("queries_t", tp.INT8, [dim, "q"]),
        ],
        [g.helper.make_tensor_value_info(y, tp.INT32, ["n", "q"])],
        g.initializers,
    )
    model = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda db_u8, q_int8: session.run(None, {"db": db_u8, "queries_t": np.ascontiguousarray(q_int8.T)})[0]


def reduceat_groups(scores: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    """Top-k persons per query column from per-person maxima (rows grouped by person)."""
    maxima = np.maximum.reduceat(scores, starts, axis=0)
    return np.argpartition(-maxima, k, axis=0)[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--persons", type=int, default=None, help="default n / 10")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ann-n", type=int, default=50_000, help="HNSW builds ~500 faces/s on 2 loaded cores")
    parser.add_argument("--ann-ef", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args()
    n, dim, k, batch = args.n, args.dim, args.k, args.batch
    persons = args.persons or max(1, n // 10)
    print(f"load average before: {os.getloadavg()}  ({os.cpu_count()} CPUs)")
    t = time.perf_counter()
    faces, centres, groups = make_faces(n, dim, persons)
    ids = np.arange(n, dtype=np.int64)
    singles = new_faces(centres, args.repeat, seed=1)
    queries = new_faces(centres, batch, seed=2)
    randoms = random_units(batch, dim, seed=3)
    print(f"data: {n} faces x {dim}, {persons} persons, built in {time.perf_counter() - t:.1f} s")

    indexes: dict[str, ExactIndex] = {}
    memory: dict[str, tuple[int, int]] = {}
    for precision in ("fp32", "fp16", "int8"):
        before = _rss_bytes()
        t = time.perf_counter()
        index = ExactIndex(dim, precision=precision, capacity=n)
        index.add(ids, faces, groups)
        build = time.perf_counter() - t
        memory[precision] = (index.nbytes, _rss_bytes() - before)
        indexes[precision] = index
        print(f"ExactIndex {precision}: add {n} in {build:.1f} s, kernel {index.backend}")

    fns_one: dict[str, callable] = {}
    fns_batch: dict[str, callable] = {}
    single_iter = {"i": 0}

    def one(fn):
        def call():
            single_iter["i"] = (single_iter["i"] + 1) % len(singles)
            return fn(singles[single_iter["i"] : single_iter["i"] + 1])

        return call

    fns_one["numpy FP32 product D @ q (no top-k)"] = one(lambda q: faces @ q[0])
    fns_batch["numpy FP32 product D @ q (no top-k)"] = lambda: faces @ queries.T
    faiss_note = ""
    try:
        import faiss

        flat = faiss.IndexFlatIP(dim)
        flat.add(faces)
        fns_one[f"FAISS IndexFlatIP top-{k}"] = one(lambda q: flat.search(q, k))
        fns_batch[f"FAISS IndexFlatIP top-{k}"] = lambda: flat.search(queries, k)
        faiss_note = f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads"
    except ImportError:
        faiss_note = "FAISS column skipped: faiss-cpu is not installed (pip install faiss-cpu)"
    ort_product = ort_int8_product(dim)
    if ort_product is not None:
        db_u8 = indexes["int8"]._data[:n].view(np.uint8) ^ np.uint8(0x80)  # int8 + 128, for the zero point
        check = ort_product(db_u8[:1000], quantize_int8(queries[:2]))
        exact = indexes["int8"]._data[:1000].astype(np.int32) @ quantize_int8(queries[:2]).astype(np.int32).T
        assert np.array_equal(check, exact), "MatMulInteger is not exact"
        label = "ONNX Runtime MatMulInteger INT8 product (no top-k)"
        fns_one[label] = one(lambda q: ort_product(db_u8, quantize_int8(q)))
        q_int8 = quantize_int8(queries)
        fns_batch[label] = lambda: ort_product(db_u8, q_int8)
    for precision, index in indexes.items():
        label = f"ExactIndex {precision.upper()} top-{k}"
        fns_one[label] = one(lambda q, index=index: index.search(q, k))
        fns_batch[label] = lambda index=index: index.search(queries, k)
    for precision, index in indexes.items():
        label = f"ExactIndex {precision.upper()} top-{k} persons"
        fns_one[label] = one(lambda q, index=index: index.search_groups(q, k))
        fns_batch[label] = lambda index=index: index.search_groups(queries, k)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    fns_one["numpy FP32 product + reduceat persons"] = one(
        lambda q: reduceat_groups((faces @ q[0])[:, None], starts, k)
    )
    fns_batch["numpy FP32 product + reduceat persons"] = lambda: reduceat_groups(faces @ queries.T, starts, k)

    one_t = interleaved(fns_one, args.repeat)
    batch_t = interleaved(fns_batch, max(1, args.repeat // 2))
    base_one = one_t["numpy FP32 product D @ q (no top-k)"]
    base_batch = batch_t["numpy FP32 product D @ q (no top-k)"]
    print()
    print(f"## Exact search, {n} x {dim}, k={k} (ms per query; ratio to the bare NumPy FP32 product)")
    print(f"| method | 1 query | x numpy | batch of {batch} | x numpy |")
    print("|---|---:|---:|---:|---:|")
    for name in fns_one:
        o, b = one_t[name] * 1e3, batch_t[name] * 1e3 / batch
        print(f"| {name} | {o:.1f} | {o / base_one / 1e3:.2f} | {b:.2f} | {b / base_batch / 1e3 * batch:.2f} |")
    print(f"({faiss_note})")

    print()
    print(f"## Recall@{k} against exact FP32 (top-{k} vector ids)")
    print("| precision | identity queries | random queries | persons top-1 agree (identity) |")
    print("|---|---:|---:|---:|")
    truth = {name: indexes["fp32"].search(qs, k) for name, qs in (("id", queries), ("rnd", randoms))}
    truth_g = indexes["fp32"].search_groups(queries, 1)
    for precision in ("fp16", "int8"):
        index = indexes[precision]
        r_id = recall_at_k(index.search(queries, k), truth["id"], k)
        r_rnd = recall_at_k(index.search(randoms, k), truth["rnd"], k)
        agree = np.mean([a.groups[0] == b.groups[0] for a, b in zip(index.search_groups(queries, 1), truth_g)])
        print(f"| {precision.upper()} | {r_id:.4f} | {r_rnd:.4f} | {agree:.3f} |")

    print()
    print("## Memory per 1M faces")
    print("| precision | vectors + ids + groups (MB) | measured RSS growth of add (MB) |")
    print("|---|---:|---:|")
    for precision, (nbytes, rss) in memory.items():
        print(f"| {precision.upper()} | {nbytes / n * 1e6 / 2**20:.0f} | {rss / n * 1e6 / 2**20:.0f} |")

    if args.ann_n > 0:
        m = min(args.ann_n, n)
        del fns_one, fns_batch
        try:
            ann = AnnIndex(dim)
        except Exception as exc:  # the ann extra is missing
            print(f"\nANN skipped: {exc}")
        else:
            t = time.perf_counter()
            ann.add(ids[:m], faces[:m], groups[:m])
            build = time.perf_counter() - t
            sub_persons = int(groups[m - 1]) + 1
            ann_queries = new_faces(centres[:sub_persons], min(batch * 4, sub_persons), seed=4)
            print()
            print(f"## HNSW AnnIndex (usearch, M=16, ef_construction=128) on {m} faces: built in {build:.1f} s")
            print(f"| ef_search | recall@{k} vs exact FP32 | queries/s batched | ms per single query |")
            print("|---:|---:|---:|---:|")
            for ef in args.ann_ef:
                ann.expansion_search = ef
                recall = ann.recall_report(ann_queries, k)
                times = interleaved(
                    {"b": lambda: ann.search(ann_queries, k), "s": lambda: ann.search(ann_queries[:1], k)},
                    args.repeat,
                )
                print(f"| {ef} | {recall:.4f} | {len(ann_queries) / times['b']:.0f} | {times['s'] * 1e3:.2f} |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
