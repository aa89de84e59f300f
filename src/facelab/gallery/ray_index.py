"""Photo-library indexing on Ray (extra ``ray``): millions of photos over many cores or machines.

Pipeline (Ray Data): the image paths that need work (the same resumable plan as
:func:`facelab.gallery.indexing.index_photos`) → ``map_batches`` over a pool of actors, each
holding **one** :class:`~facelab.pipeline.FaceAnalyzer` (built once in the actor, CPU or GPU) that
reads, hashes, decodes and analyses its batch → per-image rows (Arrow) → either

* streamed back and written to the gallery one transaction per batch (SQLite or PostgreSQL), or
* written as Parquet shards (``shards=DIR``, one file per block, written by the workers in
  parallel) and then bulk-loaded into the gallery with :func:`load_shards`.

Row order is preserved, so the stored faces (ids included) are exactly those of a
single-process run over the same photos. Actors reserve ``cpus_per_actor`` CPUs (fractions
allowed: on a 2-CPU node, 0.5 lets Ray Data's own tasks run beside two actors) and
``gpus_per_actor`` GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, ContractMismatchError
from facelab.gallery.contract import contract_of, contract_of_card
from facelab.gallery.indexing import (
    IndexProgress,
    IndexReport,
    count_batch,
    faces_to_new,
    plan_index,
    prune_missing,
    same_content,
    write_batch,
)
from facelab.gallery.records import DEFAULT_COLLECTION, NewFace
from facelab.gallery.store import ImageWrite, path_bytes

__all__ = ["index_photos_ray", "load_shards", "FaceIndexActor", "ROW_SCHEMA_FIELDS"]

_logger = logging.getLogger(__name__)

#: Columns of the per-image rows the actors return (and the Parquet shards hold).
ROW_SCHEMA_FIELDS = (
    "path", "sha256", "size", "mtime_ns", "width", "height", "error", "contract_id", "embeddings", "bboxes",
    "kps", "has_kps", "det_scores", "quality", "quality_detail", "crops",
)  # fmt: skip


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError('indexing on Ray needs ray[data]: pip install "facelab[ray]"') from None
    return ray


def _schema() -> Any:
    import pyarrow as pa

    f32 = pa.list_(pa.float32())
    return pa.schema([
        ("path", pa.binary()), ("sha256", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
        ("width", pa.int64()), ("height", pa.int64()), ("error", pa.string()), ("contract_id", pa.string()),
        ("embeddings", pa.list_(f32)), ("bboxes", pa.list_(f32)), ("kps", pa.list_(f32)),
        ("has_kps", pa.list_(pa.bool_())), ("det_scores", pa.list_(pa.float64())),
        ("quality", pa.list_(pa.float64())), ("quality_detail", pa.list_(pa.string())),
        ("crops", pa.list_(pa.binary())),
    ])  # fmt: skip


class FaceIndexActor:
    """A Ray actor: one analyser, called on batches of image paths (``{"path": [bytes, ...]}``).

    Args:
        analyzer_options: keyword arguments of :class:`~facelab.pipeline.FaceAnalyzer`.
        save_crops: also return a JPEG crop per face.
        max_num: at most this many faces per image (0 = all).
        threads: ONNX Runtime intra-op threads, unless the options fix them.
    """

    def __init__(
        self, analyzer_options: dict[str, Any], save_crops: bool = False, max_num: int = 0, threads: int | None = None
    ) -> None:
        from facelab.pipeline import FaceAnalyzer
        from facelab.runtime.session import RuntimeOptions

        options = dict(analyzer_options)
        runtime = options.get("runtime")
        if threads is not None and (runtime is None or runtime.intra_op_threads is None):
            # As many ONNX Runtime threads as the CPUs the actor reserved (not every core of the node).
            base = runtime or RuntimeOptions(providers=options.pop("providers", "auto"))
            options["runtime"] = dataclasses.replace(base, intra_op_threads=threads)
        self.analyzer = FaceAnalyzer(**options)
        self.contract_id = contract_of(self.analyzer).id
        self.save_crops = save_crops
        self.max_num = max_num

    def __call__(self, batch: dict[str, Any]) -> Any:
        """Analyse one batch; returns a ``pyarrow.Table`` with :data:`ROW_SCHEMA_FIELDS`."""
        import pyarrow as pa

        from facelab.io.prefetch import load_decoded

        items = [load_decoded(Path(os.fsdecode(bytes(p))), digest=True) for p in batch["path"]]
        good = [i for i in items if i.error is None]
        found = iter(self.analyzer.analyze_batch([i.image for i in good], max_num=self.max_num)) if good else iter(())
        rows = []
        for item in items:
            faces = faces_to_new(item.image, next(found), item.sha256, self.save_crops) if item.error is None else []
            st = item.stat
            rows.append({
                "path": path_bytes(item.path), "sha256": item.sha256,
                "size": None if st is None else st.st_size, "mtime_ns": None if st is None else st.st_mtime_ns,
                "width": None if item.image is None else int(item.image.shape[1]),
                "height": None if item.image is None else int(item.image.shape[0]),
                "error": item.error, "contract_id": self.contract_id,
                "embeddings": [np.asarray(f.embedding, np.float32).tolist() for f in faces],
                "bboxes": [np.asarray(f.bbox, np.float32).tolist() for f in faces],
                "kps": [[] if f.kps is None else np.asarray(f.kps, np.float32).reshape(-1).tolist() for f in faces],
                "has_kps": [f.kps is not None for f in faces],
                "det_scores": [f.det_score for f in faces], "quality": [f.quality for f in faces],
                "quality_detail": [json.dumps(f.quality_detail) for f in faces], "crops": [f.crop for f in faces],
            })  # fmt: skip
        return pa.Table.from_pylist(rows, schema=_schema())


def _row_to_write(row: dict[str, Any]) -> ImageWrite:
    faces = []
    for i, emb in enumerate(row["embeddings"]):
        faces.append(
            NewFace(
                np.asarray(emb, np.float32),
                source="index",
                bbox=np.asarray(row["bboxes"][i], np.float32),
                kps=np.asarray(row["kps"][i], np.float32).reshape(5, 2) if row["has_kps"][i] else None,
                det_score=row["det_scores"][i],
                quality=row["quality"][i],
                quality_detail=json.loads(row["quality_detail"][i]),
                source_sha256=row["sha256"],
                crop=row["crops"][i],
            )  # fmt: skip
        )
    return ImageWrite(
        Path(os.fsdecode(row["path"])), row["sha256"], row["size"], row["mtime_ns"], row["width"], row["height"],
        row["error"], faces,
    )  # fmt: skip


def _contract_from_options(options: dict[str, Any]) -> Any:
    """The embedding contract of the analyser the options describe, without loading any model."""
    from facelab.pipeline import DEFAULT_PACK
    from facelab.zoo import resolve_pack

    resolved = resolve_pack(
        options.get("pack") or DEFAULT_PACK, home=options.get("home"), download=options.get("download", True)
    )
    member = resolved.model("recognition")
    if member is None:
        raise ConfigError(f"pack {resolved.name!r} has no recognition model; a gallery needs one")
    return contract_of_card(member[0], member[1], options.get("home"))


class _Writer:
    """Writes per-image rows into the gallery in batches, exactly as the single-process indexer."""

    def __init__(self, gallery: Any, coll: Any, known: dict[bytes, Any], report: IndexReport, state: IndexProgress,
                 progress: Callable[[IndexProgress], None] | None, started: float) -> None:  # fmt: skip
        self.gallery, self.coll, self.known, self.report, self.state = gallery, coll, known, report, state
        self.progress, self.started = progress, started

    def write(self, rows: list[dict[str, Any]]) -> None:
        writes, touches, analysed = [], [], 0
        for row in rows:
            if row["contract_id"] != self.coll.contract.id:
                raise ContractMismatchError(
                    f"a Ray actor's recogniser has contract {row['contract_id']}, the collection "
                    f"{self.coll.name!r} {self.coll.contract.id} ({self.coll.contract.describe()})"
                )
            record = self.known.get(row["path"])
            if same_content(record, row["sha256"]):
                touches.append((record.id, row["size"], row["mtime_ns"]))
                self.report.unchanged += 1
                continue
            write = _row_to_write(row)
            if write.error is not None:
                self.report.errors += 1
                self.report.failures.append((os.fsdecode(row["path"]), write.error))
            else:
                analysed += 1
            writes.append(write)
        added, removed = write_batch(self.gallery, self.coll.id, writes, touches)
        count_batch(self.report, self.state, self.started, self.progress, analysed=analysed,
                    handled=len(writes) + len(touches), added=added, removed=removed)  # fmt: skip


def _init_ray(ray: Any, address: str | None) -> None:
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in ("FACELAB_HOME", "FACELAB_OFFLINE", "FACELAB_MAX_PIXELS") if k in os.environ}
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if env:
        options["runtime_env"] = {"env_vars": env}
    if address in (None, "", "auto"):
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            ray.init(**options)
    else:
        ray.init(address=address, **options)


def index_photos_ray(
    gallery: Any,
    inputs: Sequence[str | os.PathLike],
    analyzer_options: dict[str, Any] | None = None,
    *,
    collection: str = DEFAULT_COLLECTION,
    address: str | None = "auto",
    actors: int = 2,
    cpus_per_actor: float = 0.5,
    gpus_per_actor: float = 0.0,
    batch_images: int = 8,
    shards: str | os.PathLike | None = None,
    prune: bool = False,
    retry_errors: bool = False,
    max_num: int = 0,
    progress: Callable[[IndexProgress], None] | None = None,
) -> IndexReport:
    """Index photos with a Ray Data actor pool (see the module docstring).

    Args:
        gallery: the :class:`~facelab.gallery.Gallery` (the driver writes to it).
        inputs: files, folders (recursive) and glob patterns, readable by every Ray node.
        analyzer_options: :class:`~facelab.pipeline.FaceAnalyzer` keyword arguments (default: the
            open pack); each actor builds its own analyser from them.
        collection: the collection (created when missing).
        address: ``"auto"`` (a running cluster, else a new local one), ``"local"``, a cluster
            address, or ``None`` to use the Ray session already initialised.
        actors: actors in the pool.
        cpus_per_actor: CPUs each actor reserves (fractions allowed; leave some CPU to Ray Data's own tasks,
            or the pipeline stalls: 2 actors × 0.5 on a 2-CPU node). Its ONNX Runtime threads follow it.
        gpus_per_actor: GPUs each actor reserves (fractions allowed).
        batch_images: images per actor call and per gallery transaction.
        shards: write Parquet shards here, then bulk-load them (default: stream rows to the gallery).
        prune: forget images under the inputs that no longer exist.
        retry_errors: analyse again images that failed before.
        max_num: at most this many faces per image (0 = all).
        progress: called after every written batch with an :class:`~facelab.gallery.indexing.IndexProgress`.

    Returns:
        :class:`~facelab.gallery.indexing.IndexReport`.
    """
    from facelab.io.paths import expand_image_inputs

    ray = _ray()
    options = dict(analyzer_options or {})
    started = time.perf_counter()
    paths = [Path(os.path.abspath(p)) for p in expand_image_inputs(inputs)]
    coll = gallery.ensure_contract(gallery.collection(collection, create=True), _contract_from_options(options))
    report = IndexReport(coll.name, scanned=len(paths))
    todo, known, report.unchanged = plan_index(gallery.store, coll.id, paths, retry_errors=retry_errors)
    state = IndexProgress(0, len(todo), 0, 0, 0.0)
    writer = _Writer(gallery, coll, known, report, state, progress, started)
    if todo:
        _init_ray(ray, address)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items(
            [{"path": path_bytes(p)} for p in todo], override_num_blocks=max(1, len(todo) // batch_images)
        )
        ds = ds.map_batches(
            FaceIndexActor, fn_constructor_kwargs={"analyzer_options": options, "save_crops": coll.save_crops,
                                                   "max_num": max_num, "threads": max(1, round(cpus_per_actor))},
            batch_size=batch_images, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, int(actors))),
            num_cpus=float(cpus_per_actor), num_gpus=float(gpus_per_actor) or None,
        )  # fmt: skip
        if shards is None:
            for table in ds.iter_batches(batch_size=batch_images, batch_format="pyarrow"):
                writer.write(table.to_pylist())
        else:
            ds.write_parquet(os.fspath(shards))
            load_shards(gallery, shards, collection=coll.name, _writer=writer, batch_images=batch_images)
    if prune:
        report.pruned = prune_missing(gallery, coll.id, inputs, {path_bytes(p) for p in paths})
    report.elapsed = time.perf_counter() - started
    return report


def load_shards(
    gallery: Any,
    folder: str | os.PathLike,
    *,
    collection: str = DEFAULT_COLLECTION,
    batch_images: int = 64,
    _writer: Any = None,
) -> IndexReport:
    """Bulk-load Parquet shards written by :func:`index_photos_ray` (``shards=``) into a collection.

    Shards are read in file-name order, ``batch_images`` rows per transaction. A shard's rows whose
    image is already stored with the same content hash only refresh its ``stat``.
    """
    import pyarrow.parquet as pq

    files = sorted(Path(folder).glob("*.parquet"))
    if _writer is None:
        coll = gallery.collection(collection, create=True)
        known = {path_bytes(r.path): r for r in gallery.store.images(coll.id)}
        report = IndexReport(coll.name)
        _writer = _Writer(gallery, coll, known, report, IndexProgress(0, 0, 0, 0, 0.0), None, time.perf_counter())
        first = pq.read_table(files[0]).slice(0, 1).to_pylist() if files else []
        if first and coll.contract is None:
            raise ConfigError(f"collection {coll.name!r} has no embedding contract; index into it once first")
    with gallery.store.bulk_load(_writer.coll.id):
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_images):
                _writer.write(batch.to_pylist())
    return _writer.report
