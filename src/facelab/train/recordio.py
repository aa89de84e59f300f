r"""MXNet RecordIO (``.rec`` + ``.idx``) reading and writing without mxnet (numpy only, no torch).

Binary layout of one record: ``uint32`` magic ``0xced7230a``, ``uint32`` ``lrec = cflag << 29 | length``
(29-bit length), ``length`` payload bytes, zero padding to a 4-byte boundary. ``cflag`` 0 is a
whole record; a payload containing the magic word at a 4-byte-aligned position is stored split at
it (cflag 1 = first part, 2 = middle, 3 = last; the magic word between parts is implied), which
this module both writes and reads. All integers are little-endian.

An image record's payload is an ``IRHeader`` packed as ``IfQQ`` (``uint32 flag``, ``float32 label``,
``uint64 id``, ``uint64 id2``; 24 bytes). With ``flag > 0`` the header's label field is 0 and ``flag``
``float32`` labels follow. The encoded image bytes come last. The ``.idx`` file is text, one
``key\toffset`` line per record.

InsightFace training sets put a header record at key 0 with ``flag = 2`` and label
``[first_identity_record, end]``; images are keys ``1 .. label[0] - 1``; then one empty identity
record per class whose label is its image key range ``[start, stop)``.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError

__all__ = [
    "MAGIC",
    "IRHeader",
    "RecordIOError",
    "RecordReader",
    "RecordWriter",
    "pack_record",
    "unpack_record",
    "pack_image_folder",
    "scan_image_folder",
    "IMAGE_EXTENSIONS",
]

_logger = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_MAX_LEN = (1 << 29) - 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class RecordIOError(FacelabError, ValueError):
    """A ``.rec``/``.idx`` pair or an image folder to pack is malformed (truncated, mismatched, empty)."""


@dataclass(frozen=True)
class IRHeader:
    """Header of an image record.

    Attributes:
        flag: number of extra float labels (0 → ``label`` is a single float).
        label: the label(s): a float, or a tuple of ``flag`` floats.
        id: record id (usually the key).
        id2: second id (InsightFace's header record uses 1).
    """

    flag: int
    label: float | tuple[float, ...]
    id: int = 0
    id2: int = 0


def pack_record(header: IRHeader, payload: bytes = b"") -> bytes:
    """Serialise an :class:`IRHeader` (24 bytes, plus 4 per extra label) followed by ``payload``."""
    if isinstance(header.label, (tuple, list, np.ndarray)):
        labels = np.asarray(header.label, dtype="<f4").reshape(-1)
        head = _HEADER.pack(len(labels), 0.0, header.id, header.id2) + labels.tobytes()
    else:
        head = _HEADER.pack(0, float(header.label), header.id, header.id2)
    return head + bytes(payload)


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record payload into its :class:`IRHeader` and the remaining (image) bytes."""
    if len(record) < _HEADER.size:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than the 24-byte IRHeader")
    flag, label, id1, id2 = _HEADER.unpack_from(record, 0)
    pos = _HEADER.size
    if flag > 0:
        end = pos + 4 * flag
        if len(record) < end:
            raise RecordIOError(f"record header announces {flag} labels but the record has only {len(record)} bytes")
        labels = tuple(float(v) for v in np.frombuffer(record, dtype="<f4", count=flag, offset=pos))
        return IRHeader(flag, labels, id1, id2), record[end:]
    return IRHeader(0, float(label), id1, id2), record[pos:]


class RecordWriter:
    """Write an indexed RecordIO pair (``.rec`` and ``.idx``).

    Args:
        rec_path: the ``.rec`` file to create (overwritten).
        idx_path: the ``.idx`` file; default: ``rec_path`` with suffix ``.idx``.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(self.idx_path, "w", encoding="ascii")  # noqa: SIM115
        self._keys: set[int] = set()

    def write(self, key: int, payload: bytes) -> int:
        """Append one record under ``key``; returns its byte offset in the ``.rec``."""
        if key in self._keys:
            raise RecordIOError(f"duplicate record key {key}")
        if len(payload) > _MAX_LEN:
            raise RecordIOError(f"record {key} of {len(payload)} bytes exceeds the RecordIO limit of 2^29 - 1")
        offset = self._rec.tell()
        parts = []
        start = 0
        for pos in range(0, len(payload) - len(payload) % 4, 4):
            if payload[pos : pos + 4] == _MAGIC_BYTES:
                parts.append(payload[start:pos])
                start = pos + 4
        parts.append(payload[start:])
        for i, part in enumerate(parts):
            if len(parts) == 1:
                cflag = 0
            else:
                cflag = 1 if i == 0 else (3 if i == len(parts) - 1 else 2)
            self._rec.write(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part)
            self._rec.write(b"\0" * (-len(part) % 4))
        self._idx.write(f"{key}\t{offset}\n")
        self._keys.add(key)
        return offset

    def close(self) -> None:
        """Flush and close both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordReader:
    """Random access to an indexed RecordIO pair.

    The ``.idx`` is read at construction and checked against the ``.rec`` size; every read
    checks the magic word and the length, so a truncated file or a stale index fails with a
    :class:`RecordIOError` naming the key and offset. The file handle is opened lazily per
    process (safe with DataLoader worker processes).

    Args:
        rec_path: the ``.rec`` file.
        idx_path: its ``.idx``; default: ``rec_path`` with suffix ``.idx``.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        for p in (self.rec_path, self.idx_path):
            if not p.is_file():
                raise RecordIOError(f"{p}: no such file")
        self.size = self.rec_path.stat().st_size
        self.offsets: dict[int, int] = {}
        for n, line in enumerate(self.idx_path.read_text(encoding="ascii").splitlines(), 1):
            if not line.strip():
                continue
            try:
                key_s, off_s = line.split("\t")
                key, off = int(key_s), int(off_s)
            except ValueError:
                raise RecordIOError(f"{self.idx_path}:{n}: expected 'key<TAB>offset', got {line!r}") from None
            if off < 0 or off + 8 > self.size:
                raise RecordIOError(
                    f"{self.idx_path}:{n}: offset {off} of key {key} lies beyond the end of {self.rec_path} "
                    f"({self.size} bytes): the .idx does not belong to this .rec, or the .rec is truncated"
                )
            self.offsets[key] = off
        self._fh = None
        self._pid = -1

    @property
    def keys(self) -> list[int]:
        """Record keys in index order."""
        return list(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    def _file(self):  # noqa: ANN202
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115
            self._pid = os.getpid()
        return self._fh

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (parts of a split record joined again)."""
        try:
            offset = self.offsets[key]
        except KeyError:
            raise RecordIOError(f"{self.idx_path}: no record with key {key}") from None
        fh = self._file()
        fh.seek(offset)
        out = []
        pos = offset
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: truncated at byte {pos} while reading key {key}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{self.rec_path}: no RecordIO magic at byte {pos} (key {key}): "
                    "the .idx does not match this .rec, or the file is corrupt"
                )
            cflag, length = lrec >> 29, lrec & _MAX_LEN
            data = fh.read(length)
            if len(data) < length:
                raise RecordIOError(
                    f"{self.rec_path}: truncated: record {key} at byte {offset} needs {length} bytes, "
                    f"only {len(data)} remain"
                )
            fh.seek(-length % 4, 1)
            pos += 8 + length + (-length % 4)
            if cflag in (0, 1) and out:
                raise RecordIOError(f"{self.rec_path}: broken split record at byte {pos} (key {key})")
            out.append(data)
            if cflag in (0, 3):
                break
            if cflag not in (1, 2):
                raise RecordIOError(f"{self.rec_path}: bad cflag {cflag} at byte {pos} (key {key})")
        return _MAGIC_BYTES.join(out)

    def read_header(self, key: int) -> tuple[IRHeader, bytes]:
        """``(header, image_bytes)`` of record ``key``."""
        return unpack_record(self.read(key))

    def image_keys(self) -> list[int]:
        """Keys of the image records: ``range(1, label[0])`` when key 0 is an InsightFace header record, else all."""
        if 0 in self.offsets:
            header, _ = self.read_header(0)
            if header.flag > 0:
                stop = int(header.label[0])  # type: ignore[index]
                keys = list(range(1, stop))
                missing = [k for k in keys[:1] + keys[-1:] if k not in self.offsets]
                if missing:
                    raise RecordIOError(
                        f"{self.idx_path}: header record says images are keys 1..{stop - 1}, "
                        f"key {missing[0]} is missing"
                    )
                return keys
        return self.keys

    def close(self) -> None:
        """Close the file handle."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fh"] = None
        state["_pid"] = -1
        return state


def scan_image_folder(root: str | Path) -> list[tuple[Path, int]]:
    """``(path, label)`` for every image of an identity-per-sub-folder tree, labels by sorted folder name.

    Raises:
        RecordIOError: ``root`` is missing, has no sub-folders, or a sub-folder has no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise RecordIOError(f"{root}: not a folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise RecordIOError(f"{root}: no identity sub-folders (expected one folder of images per identity)")
    items: list[tuple[Path, int]] = []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise RecordIOError(f"{folder}: identity folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
        items.extend((f, label) for f in files)
    return items


def pack_image_folder(root: str | Path, out_prefix: str | Path, items: Sequence[tuple[Path, int]] | None = None) -> int:
    """Pack an image folder (one sub-folder per identity) into ``<out_prefix>.rec`` / ``.idx`` / ``property``.

    The encoded file bytes are stored as they are (no re-encoding), in InsightFace's layout: a
    header record 0 (``flag=2``), images as keys ``1..N`` with their label, then one identity
    record per class labelled with its key range. ``property`` beside them holds
    ``"num_classes,112,112"``.

    Args:
        root: the image folder.
        out_prefix: output path without suffix, e.g. ``out/train``.
        items: ``(path, label)`` pairs to pack instead of scanning ``root``; labels must be
            ``0..C-1`` with every class present.

    Returns:
        Number of images packed.
    """
    items = list(items) if items is not None else scan_image_folder(root)
    items.sort(key=lambda it: it[1])
    num_classes = max(label for _, label in items) + 1 if items else 0
    seen = {label for _, label in items}
    if not items or seen != set(range(num_classes)):
        raise RecordIOError(f"{root}: classes without images: {sorted(set(range(num_classes)) - seen) or 'all'}")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    first_identity = len(items) + 1
    ranges: dict[int, list[int]] = {}
    with RecordWriter(out_prefix.with_suffix(".rec"), out_prefix.with_suffix(".idx")) as writer:
        writer.write(0, pack_record(IRHeader(2, (float(first_identity), float(first_identity + num_classes)), 0, 1)))
        for key, (path, label) in enumerate(items, 1):
            data = Path(path).read_bytes()
            if not data:
                raise RecordIOError(f"{path}: empty file")
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
            ranges.setdefault(label, [key, key + 1])[1] = key + 1
        for label in range(num_classes):
            start, stop = ranges[label]
            key = first_identity + label
            writer.write(key, pack_record(IRHeader(2, (float(start), float(stop)), key, 0)))
    out_prefix.with_name("property").write_text(f"{num_classes},112,112\n", encoding="ascii")
    _logger.info("packed %d images of %d identities into %s.rec", len(items), num_classes, out_prefix)
    return len(items)


def iter_records(reader: RecordReader) -> Iterator[tuple[int, IRHeader, bytes]]:
    """Yield ``(key, header, image_bytes)`` for every image record of ``reader``."""
    for key in reader.image_keys():
        header, data = reader.read_header(key)
        yield key, header, data
