"""Service throughput and latency on loopback, beside the same work done directly in one process.

Starts ``facelab serve`` (auth on, a read+write key, ``--workers`` inference threads with one ONNX
Runtime thread each) and, with a bounded load generator (a fixed number of requests per level,
``concurrency`` client threads with keep-alive connections), measures requests/s and p50/p95
latency of ``/v1/detect``, ``/v1/embeddings`` and, when the gallery routes exist,
``/v1/collections/{id}/search`` on a gallery of ``--gallery-faces`` synthetic faces. The direct
column runs the same library calls (decode + detect, decode + embed, decode + embed + search) in
this process with the same thread settings, one call at a time.

Usage:
    python benchmarks/bench_serve.py [--requests 40] [--concurrency 1 4 16] [--workers 2] [--gallery-faces 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_helpers import ServerProcess  # noqa: E402 - the tests' server runner
from shared_data import shared_root  # noqa: E402 - honours FACELAB_SHARED

SHARED = shared_root()
PHOTO = SHARED / "data" / "verification" / "deepface" / "img1.jpg"
GROUP = SHARED / "data" / "images" / "t1.jpg"


def _fill_gallery(url: str, fa, faces: int, per_person: int = 10) -> None:
    """A collection ``bench`` of ``faces`` synthetic unit embeddings with the analyser's contract."""
    import numpy as np

    from facelab.gallery import Gallery, contract_of
    from facelab.gallery.records import NewFace

    rng = np.random.default_rng(0)
    with Gallery.open(url) as g:
        coll = g.ensure_contract(g.collection("bench", create=True), contract_of(fa))
        dim = coll.contract.dim
        store = g.store
        for start in range(0, faces, 10_000):
            n = min(10_000, faces - start)
            with store.transaction():
                pids = store.add_persons(coll.id, [(f"p{start + i}", None, None) for i in range(0, n, per_person)])
                vecs = rng.standard_normal((n, dim)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                store.add_faces(coll.id, [NewFace(v, person_id=pids[i // per_person]) for i, v in enumerate(vecs)])


def _load(url: str, key: str, files: dict, n: int, concurrency: int) -> tuple[float, list[float], int]:
    local = {}

    def client() -> httpx.Client:
        import threading

        tid = threading.get_ident()
        if tid not in local:
            local[tid] = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=300)
        return local[tid]

    def one(_: int) -> tuple[float, int]:
        start = time.perf_counter()
        r = client().post(url, files=files)
        return time.perf_counter() - start, r.status_code

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: one request per connection
        start = time.perf_counter()
        results = list(pool.map(one, range(n)))
        wall = time.perf_counter() - start
    for c in local.values():
        c.close()
    errors = sum(1 for _, code in results if code != 200)
    return n / wall, [t for t, _ in results], errors


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18097)
    parser.add_argument("--gallery-faces", type=int, default=100_000, help="synthetic faces in the searched gallery")
    args = parser.parse_args()

    from facelab import FaceAnalyzer
    from facelab.runtime.session import RuntimeOptions
    from facelab.serve.auth import KeyStore

    data = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    key, _ = KeyStore(data).create("bench", "write")
    fa = FaceAnalyzer(runtime=RuntimeOptions(intra_op_threads=1))
    url = f"sqlite:///{data / 'gallery.db'}"
    t0 = time.perf_counter()
    _fill_gallery(url, fa, args.gallery_faces)
    print(f"gallery: {args.gallery_faces} synthetic faces written in {time.perf_counter() - t0:.1f} s")
    server = ServerProcess(data, ["--workers", str(args.workers), "--queue", "64"], port=args.port).start(timeout=120)
    base = server.url
    from facelab.gallery import Gallery

    gallery = Gallery.open(url)
    group, photo = GROUP.read_bytes(), PHOTO.read_bytes()  # read once: both columns start from bytes in memory
    try:
        cases = {
            "/v1/detect (t1.jpg, 6 faces)": (
                "/v1/detect",
                {"image": ("t1.jpg", group)},
                lambda: fa.detect_faces(group),
            ),
            "/v1/embeddings (img1.jpg)": (
                "/v1/embeddings",
                {"image": ("img1.jpg", photo)},
                lambda: fa.analyze(photo, max_num=1, metric="max"),
            ),
            f"/v1/collections/bench/search ({args.gallery_faces} faces)": (
                "/v1/collections/bench/search",
                {"image": ("img1.jpg", photo)},
                lambda: gallery.search_image(photo, fa, collection="bench"),
            ),
        }
        print(f"workers={args.workers}, requests per level={args.requests}, cores={os.cpu_count()}")
        print("| route | direct ms | c | req/s | p50 ms | p95 ms | overhead at c=1 | req/s ÷ c=1 | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, (route, files, direct) in cases.items():
            direct()
            times = []
            for _ in range(max(5, args.requests // 4)):
                t = time.perf_counter()
                direct()
                times.append(time.perf_counter() - t)
            direct_ms = statistics.median(times) * 1000
            base_rate = None
            for c in args.concurrency:
                rate, lat, errors = _load(base + route, key, files, args.requests, c)
                base_rate = base_rate or rate
                p50 = _pct(lat, 0.5)
                overhead = f"{(p50 / direct_ms - 1) * 100:+.1f}%" if c == 1 else ""
                print(
                    f"| {label} | {direct_ms:.1f} | {c} | {rate:.2f} | {p50:.1f} | {_pct(lat, 0.95):.1f} | "
                    f"{overhead} | {rate / base_rate:.2f} | {errors} |"
                )
    finally:
        gallery.close()
        server.stop()


if __name__ == "__main__":
    main()
