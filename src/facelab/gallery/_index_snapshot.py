"""Index snapshots: a collection's in-memory search index saved next to its SQLite gallery file.

Building a 1M-face index from SQLite takes seconds (every embedding comes through the driver
as a Python object); a snapshot lets the next process map the index's own arrays instead.

Layout: ``<gallery.db>.index/c<collection id>-r<revision>-<precision>.snap``, one file per
collection, revision and precision (``fp32``, ``fp16``, ``int8``), written as
``....<token>.tmp`` and renamed into place. A file holds a 4 KiB header (magic
:data:`MAGIC`, a little-endian ``uint32`` length, then JSON: collection, revision, precision,
dimension, count, contract id, token) and, 4 KiB-aligned, the index's live rows as
:meth:`~facelab.gallery.search.ExactIndex.arrays` gives them: ids ``(n,)`` ``<i8``, groups
``(n,)`` ``<i8``, stored rows ``(n, dim)`` (``<f4``, ``<f2`` or ``i1``). It is memory-mapped
copy-on-write at open: nothing is copied until the index changes.

When a snapshot is used (:func:`load_index`): only when the gallery records it
(``gallery_meta`` key ``index_snapshot:<collection>:<precision>`` = its revision and random
token, written in the same write transaction that renames the file into place, and only if
the collection's revision is still the one the index was built at) *and* that revision is the
collection's current one *and* the file's header agrees (token, collection, precision,
dimension, contract, size). The token ties the file to this database, so a gallery file that
was replaced, restored from a backup or copied never reads another's snapshot. Any committed
write bumps the collection's revision, so a snapshot never answers for a store that changed;
the index is then rebuilt from the store and a new snapshot written.

Privacy: a snapshot is a copy of biometric data. The store deletes a collection's snapshot
files after every committed write to it (:meth:`SQLiteStore._after_commit`; any write makes
them stale), a stale one found at open, older revisions when a new one is published, and
every stale one on :meth:`~facelab.gallery.store.GalleryStore.erase_deleted` (which catches
writes of processes that do not know snapshots). Files are unlinked, like the SQLite WAL after
its checkpoint: the bytes leave the gallery's files, not necessarily the disk's free blocks.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import secrets
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "MAGIC",
    "SNAPSHOT_MIN_FACES",
    "SnapshotFile",
    "snapshot_folder",
    "snapshot_name",
    "snapshot_files",
    "snapshot_bytes",
    "remove_snapshots",
    "meta_key",
    "load_index",
    "build_from_store",
    "snapshot_option",
    "SnapshotWriter",
]

_logger = logging.getLogger(__name__)

#: First bytes of a snapshot file.
MAGIC = b"FLXIDXS1"
#: Collections with fewer faces get no snapshot unless asked (``snapshot=True``): their rebuild takes < 0.1 s.
SNAPSHOT_MIN_FACES = 20_000
_FORMAT = 1
_ALIGN = 4096
_STORED = {"fp32": "<f4", "fp16": "<f2", "int8": "i1"}
_NAME = re.compile(r"^c(\d+)-r(\d+)-(fp32|fp16|int8)(?:\.snap|\.[0-9a-f]+\.tmp)$")
_WRITE_STEP = 64 << 20


@dataclass(frozen=True)
class SnapshotFile:
    """A snapshot (or an unfinished ``.tmp`` one) found in a gallery's snapshot folder."""

    path: Path
    collection_id: int
    revision: int
    precision: str


def snapshot_folder(db_path: str | os.PathLike) -> Path:
    """The snapshot folder of the SQLite gallery at ``db_path``: ``<db_path>.index``."""
    path = Path(db_path)
    return path.with_name(path.name + ".index")


def snapshot_name(collection_id: int, revision: int, precision: str) -> str:
    """File name of a published snapshot."""
    return f"c{int(collection_id)}-r{int(revision)}-{precision}.snap"


def meta_key(collection_id: int, precision: str) -> str:
    """The ``gallery_meta`` key that records a collection's published snapshot."""
    return f"index_snapshot:{int(collection_id)}:{precision}"


def snapshot_files(folder: Path) -> list[SnapshotFile]:
    """Snapshot files (published and unfinished) in ``folder``; other files are not listed."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        _logger.warning("cannot list the index snapshots in %s: %s", folder, exc)
        return []
    out = []
    for name in names:
        match = _NAME.match(name)
        if match:
            out.append(SnapshotFile(folder / name, int(match[1]), int(match[2]), match[3]))
    return out


def snapshot_bytes(folder: Path) -> int:
    """Bytes held by the snapshot files in ``folder`` (unfinished ones included)."""
    total = 0
    for item in snapshot_files(folder):
        try:
            total += item.path.stat().st_size
        except OSError:  # deleted meanwhile
            pass
    return total


def remove_snapshots(folder: Path, stale: Callable[[SnapshotFile], bool]) -> int:
    """Delete the snapshot files for which ``stale(file)`` is true; the folder too once empty.

    A file that cannot be deleted is logged as an error (it may hold deleted persons' embeddings).

    Returns:
        The number of files deleted.
    """
    removed = sum(_discard(item.path) for item in snapshot_files(folder) if stale(item))
    if removed:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass
    return removed


def _discard(path: Path) -> bool:
    """Delete a snapshot file; whether this call deleted it (missing is fine, a failure is logged as an error)."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        _logger.error("cannot delete the index snapshot %s (a copy of face embeddings): %s", path, exc)
        return False


def _modes(db_path: Path) -> tuple[int, int]:
    """File and folder modes for snapshots: the gallery file's read/write bits (folders add x where r)."""
    try:
        bits = db_path.stat().st_mode & 0o666
    except OSError:
        bits = 0o600
    return bits, bits | ((bits & 0o444) >> 2)


def _layout(count: int, dim: int, itemsize: int) -> tuple[int, int, int, int]:
    """Offsets of ids, groups and rows, and the file size."""
    ids_at = _ALIGN
    groups_at = ids_at + 8 * count
    rows_at = -(-(groups_at + 8 * count) // _ALIGN) * _ALIGN
    return ids_at, groups_at, rows_at, rows_at + count * dim * itemsize


def write_snapshot(
    db_path: Path, header: dict[str, Any], ids: np.ndarray, groups: np.ndarray, rows: np.ndarray
) -> Path:
    """Write an unfinished snapshot (``.tmp``, fsynced) and return its path; :func:`publish` renames it.

    ``header`` carries ``collection_id``, ``revision``, ``precision``, ``token`` and ``contract``.
    """
    folder = snapshot_folder(db_path)
    file_mode, dir_mode = _modes(db_path)
    folder.mkdir(mode=dir_mode, exist_ok=True)
    count, dim = rows.shape
    ids_at, groups_at, rows_at, size = _layout(count, dim, rows.dtype.itemsize)
    head = {**header, "format": _FORMAT, "dim": int(dim), "count": int(count), "dtype": _STORED[header["precision"]]}
    text = json.dumps(head, sort_keys=True).encode()
    block = MAGIC + struct.pack("<I", len(text)) + text
    if len(block) > _ALIGN:  # pragma: no cover - the header is a few hundred bytes
        raise ValueError("index snapshot header too long")
    tmp = folder / (snapshot_name(header["collection_id"], header["revision"], header["precision"])[:-5]
                    + f".{header['token']}.tmp")  # fmt: skip
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), file_mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(block.ljust(_ALIGN, b"\0"))
            for array, at in ((ids, ids_at), (groups, groups_at), (rows, rows_at)):
                fh.write(b"\0" * (at - fh.tell()))
                raw = memoryview(np.ascontiguousarray(array)).cast("B")
                for a in range(0, len(raw), _WRITE_STEP):
                    fh.write(raw[a : a + _WRITE_STEP])
            if fh.tell() != size:  # pragma: no cover - a short write raises before this
                raise OSError(f"wrote {fh.tell()} of {size} bytes")
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename publishes it
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return tmp


def read_snapshot(path: Path, expect: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Map a published snapshot copy-on-write: ``(ids, groups, rows)``, or ``None`` when it does not fit.

    ``expect`` holds header values that must match (``collection_id``, ``revision``, ``precision``,
    ``token``, ``contract``, ``dim``).
    """
    try:
        with open(path, "rb") as fh:
            first = fh.read(_ALIGN)
            if len(first) < 12 or first[:8] != MAGIC:
                _logger.warning("%s: not an index snapshot; ignored", path)
                return None
            (length,) = struct.unpack("<I", first[8:12])
            head = json.loads(first[12 : 12 + length])
            wrong = {k: (head.get(k), v) for k, v in expect.items() if head.get(k) != v}
            if head.get("format") != _FORMAT or head.get("dtype") != _STORED.get(expect["precision"]) or wrong:
                _logger.warning("%s: index snapshot does not match the gallery (%s); ignored", path, wrong)
                return None
            count, dim = int(head["count"]), int(head["dim"])
            dtype = np.dtype(head["dtype"])
            ids_at, groups_at, rows_at, size = _layout(count, dim, dtype.itemsize)
            if os.fstat(fh.fileno()).st_size != size:
                _logger.warning("%s: index snapshot has the wrong size; ignored", path)
                return None
            if count == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), dtype)
            mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _logger.warning("%s: cannot read the index snapshot (%s); ignored", path, exc)
        return None
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)  # start reading it into the page cache now
    ids = np.frombuffer(mapped, "<i8", count, ids_at)
    groups = np.frombuffer(mapped, "<i8", count, groups_at)
    rows = np.frombuffer(mapped, dtype, count * dim, rows_at).reshape(count, dim)
    return ids, groups, rows


def load_index(store: Any, collection: Any, precision: str, backend: str = "auto") -> tuple[Any, int] | None:
    """The collection's exact index from its snapshot, with the revision it shows; ``None`` to rebuild.

    Stale snapshot files of the collection found on the way are deleted.
    """
    from facelab.gallery.search import ExactIndex

    if sys.byteorder != "little" or collection.contract is None:
        return None
    revision, record = store.snapshot_record(collection.id, precision)
    store.remove_stale_snapshots(collection.id, revision)
    path = store.snapshot_dir / snapshot_name(collection.id, revision, precision)
    if record is None or record.get("revision") != revision:
        _discard(path)  # not this database's record: a crash before the commit, or another database's file
        return None
    expect = {
        "collection_id": collection.id,
        "revision": revision,
        "precision": precision,
        "token": record.get("token"),
        "contract": collection.contract.id,
        "dim": collection.contract.dim,
    }
    arrays = read_snapshot(path, expect)
    if arrays is None:
        _discard(path)
        return None
    try:
        index = ExactIndex.restore(*arrays, precision=precision, backend=backend)
    except Exception as exc:  # noqa: BLE001 - a bad snapshot means a rebuild, never a failed search
        _logger.warning("collection %r: index snapshot unusable (%s); rebuilding", collection.name, exc)
        return None
    _logger.info("collection %r: search index mapped from its snapshot (%d faces)", collection.name, len(index))
    return index, revision


def build_from_store(
    store: Any, collection_id: int, index: Any, groups: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[int, int]:
    """Fill ``index`` with every face of the collection from the store; returns ``(faces, revision read)``.

    ``groups(person_ids, face_ids)`` gives each face's index group.

    Reading rows from the driver holds the GIL; checking and encoding them (NumPy) does not, so
    one worker thread adds chunk ``i`` while the next one is fetched.
    """
    pending: list[Future] = []

    def on_chunk(ids: np.ndarray, vecs: np.ndarray, persons: np.ndarray) -> None:
        if pending:
            pending.pop().result()
        pending.append(pool.submit(index.add, ids, vecs, groups(persons, ids)))

    with ThreadPoolExecutor(1, thread_name_prefix="facelab-index-build") as pool:
        count, revision = store.vector_chunks(collection_id, on_chunk)
        if pending:
            pending.pop().result()
    return count, revision


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def snapshot_option(value: Any) -> bool | None:
    """``snapshot=`` as given in Python (bool/None) or in a URL (``true``/``false``/``auto``...)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in ("", "auto", "none"):
        return None
    raise ConfigError(f"gallery snapshot must be true, false or auto, got {value!r}")


class SnapshotWriter(threading.Thread):
    """Writes a just-built index's snapshot in the background, then publishes it (see the module docstring).

    The arrays are taken when the writer is created (under the gallery's index lock, at
    ``revision``); if the index changes while they are written, the collection's revision has
    already moved on and :meth:`~facelab.gallery._sqlite.SQLiteStore.publish_snapshot` refuses
    the file. Not a daemon: a process that exits without closing its gallery finishes the file first.
    """

    def __init__(self, store: Any, collection: Any, index: Any, revision: int) -> None:
        super().__init__(name=f"facelab-snapshot-{collection.id}")
        self.store = store
        self.collection = collection
        self.revision = int(revision)
        self.precision = index.precision
        self.arrays = index.arrays()
        self.published = False

    def run(self) -> None:
        """Write, fsync, publish; failures are logged (the next open rebuilds from the store)."""
        header = {
            "collection_id": self.collection.id,
            "revision": self.revision,
            "precision": self.precision,
            "token": secrets.token_hex(8),
            "contract": self.collection.contract.id,
        }
        tmp = None
        if not os.access(self.store.path, os.W_OK):  # it could never be recorded: do not write gigabytes for nothing
            _logger.info("collection %r: gallery file is read-only; no index snapshot", self.collection.name)
            self.arrays = None  # type: ignore[assignment]
            return
        try:
            tmp = write_snapshot(self.store.path, header, *self.arrays)
            self.published = self.store.publish_snapshot(
                self.collection.id, self.revision, self.precision, tmp, header["token"]
            )
        except Exception as exc:  # noqa: BLE001 - a snapshot is an optimisation
            _logger.warning("collection %r: index snapshot not written: %s", self.collection.name, exc)
        finally:
            self.arrays = None  # type: ignore[assignment]
            if tmp is not None and not self.published:
                try:
                    tmp.unlink()
                except OSError:
                    pass
        if self.published:
            _logger.info("collection %r: index snapshot written (revision %d)", self.collection.name, self.revision)
