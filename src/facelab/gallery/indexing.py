"""Photo-library indexing: every face of every photo in a folder tree, resumable by content hash.

:func:`index_photos` walks the inputs (folders recursively, files, globs), and for each image:

* skips it when its size and modification time match what the gallery recorded (no read);
* otherwise reads and hashes it (SHA-256) while decoding: an unchanged hash only refreshes the
  recorded ``stat``; a new or changed file is analysed and its faces replace the old ones;
* records a file that cannot be decoded with ``status="error"`` and its reason (never fatal;
  ``retry_errors`` tries such files again even when unchanged).

Decoding runs in background threads (:func:`facelab.io.prefetch.iter_decoded`) while the
analyser embeds earlier images in batches (:meth:`FaceAnalyzer.analyze_batch`). Each batch of
images is written in **one transaction**, so an interrupted run (Ctrl-C, ``kill -9``) leaves
whole batches or nothing, and the next run carries on where it stopped. ``prune`` forgets images
under the inputs that no longer exist. Faces of a re-indexed (changed) photo start unassigned.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.gallery.contract import contract_of
from facelab.gallery.enroll import new_face
from facelab.gallery.records import DEFAULT_COLLECTION, ImageRecord, NewFace, stored_vectors
from facelab.gallery.store import ImageWrite, path_bytes

__all__ = [
    "IndexProgress",
    "IndexReport",
    "index_photos",
    "plan_index",
    "same_content",
    "count_batch",
    "faces_to_new",
    "write_batch",
]

_logger = logging.getLogger(__name__)


@dataclass
class IndexProgress:
    """Progress of a running index job (passed to the ``progress`` callback after each batch).

    Attributes:
        done: images handled so far (analysed, unchanged or failed) out of ``total`` to handle.
        total: images that needed work this run (after the ``stat`` check).
        faces: faces stored so far.
        errors: images that failed so far.
        elapsed: seconds since the job started.
    """

    done: int
    total: int
    faces: int
    errors: int
    elapsed: float

    @property
    def images_per_s(self) -> float:
        """Images handled per second."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def faces_per_s(self) -> float:
        """Faces stored per second."""
        return self.faces / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class IndexReport:
    """What an index run did.

    Attributes:
        collection: the collection indexed.
        scanned: image files found under the inputs.
        indexed: images analysed and stored this run.
        unchanged: images skipped because they had not changed.
        errors: images that failed this run (recorded with their reason).
        faces_added / faces_removed: faces stored / replaced or forgotten.
        pruned: images forgotten because they no longer exist (``prune``).
        elapsed: seconds.
        failures: ``(path, reason)`` of this run's failures.
    """

    collection: str
    scanned: int = 0
    indexed: int = 0
    unchanged: int = 0
    errors: int = 0
    faces_added: int = 0
    faces_removed: int = 0
    pruned: int = 0
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)


def plan_index(
    store: Any, collection_id: int, paths: Sequence[Path], *, retry_errors: bool = False
) -> tuple[list[Path], dict[bytes, ImageRecord], int]:
    """Which images need work: ``(to_process, known records by path bytes, unchanged count)``.

    An image is unchanged when the gallery recorded the same size and ``mtime_ns`` (and, unless
    ``retry_errors``, whatever its status).
    """
    todo: list[Path] = []
    known: dict[bytes, ImageRecord] = {}
    unchanged = 0
    for start in range(0, len(paths), 1000):
        chunk = list(paths[start : start + 1000])
        for record in store.images(collection_id, paths=chunk):
            known[path_bytes(record.path)] = record
        for path in chunk:
            record = known.get(path_bytes(path))
            try:
                st = os.stat(path)
            except OSError:
                todo.append(path)
                continue
            same = record is not None and record.size == st.st_size and record.mtime_ns == st.st_mtime_ns
            if same and (record.status == "done" or not retry_errors):  # type: ignore[union-attr]
                unchanged += 1
            else:
                todo.append(path)
    return todo, known, unchanged


def same_content(record: ImageRecord | None, sha256: str | None) -> bool:
    """The image was indexed without error with exactly this content: only its recorded ``stat`` needs refreshing."""
    return record is not None and sha256 is not None and record.sha256 == sha256 and record.status == "done"


def count_batch(
    report: IndexReport,
    state: IndexProgress,
    started: float,
    progress: Callable[[IndexProgress], None] | None,
    *,
    analysed: int,
    handled: int,
    added: Sequence[int],
    removed: Sequence[int],
) -> None:
    """Add one written batch to the report and the progress (``handled``: images written or touched), then report it."""
    report.indexed += analysed
    report.faces_added += len(added)
    report.faces_removed += len(removed)
    state.done += handled
    state.faces += len(added)
    state.errors = report.errors
    state.elapsed = time.perf_counter() - started
    if progress is not None:
        progress(state)


def faces_to_new(image: np.ndarray | None, faces: Sequence[Any], sha256: str | None, save_crops: bool) -> list[NewFace]:
    """Indexed faces (:class:`~facelab.structures.Face`) as store rows (unassigned, ``source="index"``)."""
    return [new_face(face, image, sha256, save_crops, source="index") for face in faces if face.embedding is not None]


def write_batch(
    gallery: Any, collection_id: int, writes: Sequence[ImageWrite], touches: Sequence[tuple[int, int, int]]
) -> tuple[list[int], list[int]]:
    """Write one batch (images with faces, refreshed ``stat``s) in one transaction; keep the index in step.

    Returns:
        ``(added face ids, removed face ids)``.
    """
    store = gallery.store
    with store.transaction() as tx:
        added, removed = store.write_images(collection_id, writes) if writes else ([], [])
        store.touch_images(collection_id, touches)
    if added or removed:
        emb = stored_vectors([f.embedding for w in writes for f in w.faces])
        new_ids = np.asarray(added, np.int64)
        gone = np.asarray(removed, np.int64)

        def apply(index: Any) -> None:
            if len(gone):
                index.remove(gone)
            if len(new_ids):
                index.add(new_ids, emb, -new_ids)

        gallery.committed(tx, collection_id, apply)
    else:
        gallery.committed(tx, collection_id, lambda index: None)
    return added, removed


def _roots(inputs: Sequence[Any]) -> list[bytes]:
    roots = []
    for item in inputs:
        path = Path(os.fspath(item))
        if path.is_dir():
            roots.append(path_bytes(os.path.abspath(path)).rstrip(b"/") + b"/")
        elif path.exists():
            roots.append(path_bytes(os.path.abspath(path)))
    return roots


def prune_missing(gallery: Any, collection_id: int, inputs: Sequence[Any], seen: set[bytes]) -> int:
    """Forget images under ``inputs`` that no longer exist; returns how many."""
    roots = _roots(inputs)
    gone = []
    for record in gallery.store.images(collection_id):
        key = path_bytes(record.path)
        under = any(key == r or (r.endswith(b"/") and key.startswith(r)) for r in roots)
        if under and key not in seen and not os.path.exists(key):
            gone.append(record.id)
    if gone:
        with gallery.store.transaction() as tx:
            removed = np.asarray(gallery.store.delete_images(gone), np.int64)
        gallery.committed(tx, collection_id, lambda index: index.remove(removed))
        gallery.store.erase_deleted()
    return len(gone)


def index_photos(
    gallery: Any,
    inputs: Sequence[str | os.PathLike],
    analyzer: Any,
    *,
    collection: str = DEFAULT_COLLECTION,
    batch_images: int = 8,
    prune: bool = False,
    retry_errors: bool = False,
    max_num: int = 0,
    decode_workers: int = 1,
    max_pixels: int | None = None,
    progress: Callable[[IndexProgress], None] | None = None,
) -> IndexReport:
    """Index photos into a collection (see the module docstring).

    Args:
        gallery: the :class:`~facelab.gallery.Gallery`.
        inputs: files, folders (recursive) and glob patterns.
        analyzer: the :class:`~facelab.pipeline.FaceAnalyzer` (its recogniser fixes or must match
            the collection's embedding contract).
        collection: the collection (created when missing).
        batch_images: images analysed and committed together.
        prune: forget images under the inputs that no longer exist.
        retry_errors: analyse again images that failed before, even when unchanged.
        max_num: at most this many faces per image (0 = all).
        decode_workers: decoding threads.
        max_pixels: decompression-bomb limit.
        progress: called after every batch with an :class:`IndexProgress`.

    Returns:
        :class:`IndexReport`.

    Raises:
        ImageError: an input names nothing that exists.
        ContractMismatchError: the collection holds another model's embeddings.
    """
    from facelab.io.paths import expand_image_inputs
    from facelab.io.prefetch import iter_decoded

    started = time.perf_counter()
    paths = [Path(os.path.abspath(p)) for p in expand_image_inputs(inputs)]
    coll = gallery.ensure_contract(gallery.collection(collection, create=True), contract_of(analyzer))
    report = IndexReport(coll.name, scanned=len(paths))
    todo, known, report.unchanged = plan_index(gallery.store, coll.id, paths, retry_errors=retry_errors)
    state = IndexProgress(0, len(todo), 0, 0, 0.0)
    batch: list[Any] = []
    errors: list[ImageWrite] = []
    touches: list[tuple[int, int, int]] = []

    def flush() -> None:
        writes = list(errors)
        if batch:
            results = analyzer.analyze_batch([b.image for b in batch], max_num=max_num)
            for item, faces in zip(batch, results):
                st = item.stat
                writes.append(
                    ImageWrite(
                        item.path,
                        item.sha256,
                        None if st is None else st.st_size,
                        None if st is None else st.st_mtime_ns,
                        int(item.image.shape[1]),
                        int(item.image.shape[0]),
                        None,
                        faces_to_new(item.image, faces, item.sha256, coll.save_crops),
                    )  # fmt: skip
                )
        if not writes and not touches:
            return
        added, removed = write_batch(gallery, coll.id, writes, touches)
        handled = len(writes) + len(touches)
        analysed = len(batch)
        batch.clear()
        errors.clear()
        touches.clear()
        count_batch(report, state, started, progress, analysed=analysed, handled=handled, added=added, removed=removed)

    for item in iter_decoded(
        todo, workers=decode_workers, prefetch=2 * batch_images, max_pixels=max_pixels, digest=True
    ):
        record = known.get(path_bytes(item.path))
        st = item.stat
        if same_content(record, item.sha256):
            touches.append((record.id, st.st_size, st.st_mtime_ns))  # same content, new stat: nothing to analyse
            report.unchanged += 1
        elif item.error is not None:
            report.errors += 1
            report.failures.append((str(item.path), item.error))
            size, mtime = (None, None) if st is None else (st.st_size, st.st_mtime_ns)
            errors.append(ImageWrite(item.path, item.sha256, size, mtime, error=item.error))
        else:
            batch.append(item)
        if len(batch) >= batch_images or len(errors) + len(touches) >= 4 * batch_images:
            flush()
    flush()
    if prune:
        report.pruned = prune_missing(gallery, coll.id, inputs, {path_bytes(p) for p in paths})
    report.elapsed = time.perf_counter() - started
    _logger.info(
        "indexed %d image(s), %d unchanged, %d error(s), %d face(s) added in %.1f s",
        report.indexed, report.unchanged, report.errors, report.faces_added, report.elapsed,
    )  # fmt: skip
    return report
