"""Background index jobs: photo-library folders under the configured roots, indexed one job at a time.

A job indexes folders that the administrator made available with ``--library DIR`` (each job
names a root by its position and paths inside it; a path that leaves its root is refused), with
:meth:`facelab.gallery.Gallery.index_photos`, which commits one transaction per batch and skips
files it already has, so a job cut short by a restart is finished by running it again. Job
state lives in memory and is lost on restart. Cancelling stops the job after its current batch.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.serve.errors import ApiError

__all__ = ["IndexJob", "JobManager", "resolve_library_path"]

_logger = logging.getLogger("facelab.serve.jobs")


class _Cancelled(Exception):
    pass


@dataclass
class IndexJob:
    """One index job and its progress."""

    id: str
    collection: str
    paths: list[str]
    status: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    faces: int = 0
    errors: int = 0
    images_per_s: float = 0.0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    report: dict[str, Any] | None = None
    cancel: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (server paths are shown relative to their root)."""
        return {
            "id": self.id,
            "collection_id": self.collection,
            "paths": self.paths,
            "status": self.status,
            "progress": {
                "done": self.done,
                "total": self.total,
                "faces": self.faces,
                "errors": self.errors,
                "images_per_s": round(self.images_per_s, 3),
            },
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "report": self.report,
        }


def resolve_library_path(roots: tuple[Path, ...], root: int, relative: str) -> Path:
    """The folder ``relative`` inside library root number ``root``; 422 when it leaves the root.

    Example:
        >>> import tempfile
        >>> base = Path(tempfile.mkdtemp())
        >>> resolve_library_path((base,), 0, ".") == base.resolve()
        True
    """
    if not roots:
        raise ApiError(503, "feature_unavailable", "no photo library is configured (start with --library DIR)")
    if not 0 <= root < len(roots):
        raise ApiError(422, "validation_error", f"root must be 0..{len(roots) - 1}")
    if "\x00" in relative or len(relative) > 1000:
        raise ApiError(422, "validation_error", "invalid path")
    base = Path(roots[root]).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ApiError(422, "validation_error", "the path leaves the library root")
    if not target.exists():
        raise ApiError(422, "validation_error", f"{relative!r} does not exist in library root {root}")
    return target


class JobManager:
    """Run index jobs in one background thread, in submission order; keeps the last 100."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.jobs: OrderedDict[str, IndexJob] = OrderedDict()
        self._queue: queue.Queue[tuple[IndexJob, list[Path]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="facelab-index-jobs", daemon=True)
        self._thread.start()

    def submit(self, collection: str, labels: list[str], paths: list[Path]) -> IndexJob:
        """Queue a job."""
        job = IndexJob(secrets.token_hex(8), collection, labels)
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > 100:
                oldest = next(iter(self.jobs))
                if self.jobs[oldest].status in ("queued", "running"):
                    break
                self.jobs.pop(oldest)
        self._queue.put((job, paths))
        return job

    def get(self, job_id: str) -> IndexJob:
        """A job by id (404 ``job_not_found``)."""
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", "no such index job")
        return job

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, paths = item
            if job.cancel:
                job.status, job.finished_at = "cancelled", time.time()
                continue
            job.status, job.started_at = "running", time.time()

            def progress(p: Any, job: IndexJob = job) -> None:
                job.done, job.total, job.faces, job.errors = p.done, p.total, p.faces, p.errors
                job.images_per_s = p.images_per_s
                if job.cancel:
                    raise _Cancelled

            try:
                report = self.state.gallery.index_photos(
                    paths,
                    self.state.analyzer,
                    collection=job.collection,
                    progress=progress,
                    max_pixels=self.state.settings.max_pixels,
                )
                job.report = {k: v for k, v in report.to_dict().items() if k != "failures"}
                job.report["failures"] = [{"file": Path(f).name, "reason": r} for f, r in report.failures[:100]]
                job.status = "done"
            except _Cancelled:
                job.status = "cancelled"
            except Exception as exc:  # noqa: BLE001 - reported in the job
                _logger.exception("index job %s failed", job.id)
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
            job.finished_at = time.time()

    def close(self) -> None:
        """Stop the worker after the current job."""
        for job in self.jobs.values():
            job.cancel = True
        self._queue.put(None)
