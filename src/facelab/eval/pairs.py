"""Verification pair lists: InsightFace ``.bin`` files, LFW ``pairs.txt``, CSV pair lists, identity folders.

Every reader returns a :class:`PairSet`: a list of unique image items (paths or encoded bytes),
an ``(N, 2)`` index array of pairs into that list, the genuine flags, and optionally a fold
number per pair. Images used by several pairs are listed (and embedded) once.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import ConfigError

__all__ = [
    "PairSet",
    "IMAGE_EXTENSIONS",
    "read_bin",
    "write_bin",
    "load_bin_pairs",
    "read_lfw_pairs",
    "read_csv_pairs",
    "identity_folder_pairs",
    "load_pairs",
]

_logger = logging.getLogger(__name__)

#: File extensions treated as images when scanning identity folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")

_LEFT_COLUMNS = ("file_x", "img1", "image1", "img_1", "image_1", "file1", "file_1", "path1", "path_1", "left", "a", "x")
_RIGHT_COLUMNS = (
    "file_y",
    "img2",
    "image2",
    "img_2",
    "image_2",
    "file2",
    "file_2",
    "path2",
    "path_2",
    "right",
    "b",
    "y",
)
_LABEL_COLUMNS = ("decision", "label", "issame", "is_same", "same", "match", "genuine", "target", "y_true")
_TRUE_WORDS = {"yes", "y", "true", "t", "1", "same", "match", "genuine", "positive", "pos"}
_FALSE_WORDS = {
    "no",
    "n",
    "false",
    "f",
    "0",
    "different",
    "diff",
    "mismatch",
    "impostor",
    "imposter",
    "negative",
    "neg",
}


@dataclass
class PairSet:
    """A labelled list of image pairs.

    Attributes:
        items: unique images, each a file path (``str``) or encoded image bytes.
        pairs: ``(N, 2)`` ``int64`` indices into ``items``.
        issame: ``(N,)`` ``bool`` genuine flags.
        folds: ``(N,)`` ``int64`` fold number of each pair, or ``None`` when the list has no
            folds (the k-fold protocol then splits contiguously).
        aligned: ``True`` when the items are already aligned crops (``.bin`` files), so an
            embedder is applied directly; ``False`` for photos that need detection first.
        name: a label for reports (usually the source file name).
    """

    items: list[str | bytes]
    pairs: np.ndarray
    issame: np.ndarray
    folds: np.ndarray | None = None
    aligned: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(self.issame, dtype=bool).reshape(-1)
        if len(self.pairs) != len(self.issame):
            raise ConfigError(f"{len(self.pairs)} pairs but {len(self.issame)} labels")
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= len(self.items)):
            raise ConfigError("pair index out of range of the item list")
        if self.folds is not None:
            self.folds = np.asarray(self.folds, dtype=np.int64).reshape(-1)
            if len(self.folds) != len(self.pairs):
                raise ConfigError("folds must have one entry per pair")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def n_genuine(self) -> int:
        """Number of genuine pairs."""
        return int(self.issame.sum())

    @property
    def n_impostor(self) -> int:
        """Number of impostor pairs."""
        return int(len(self.issame) - self.issame.sum())


def _unpickle(path: Path) -> tuple[list, list]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except UnicodeDecodeError:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
        raise ConfigError(f"{path}: not an InsightFace .bin verification file: {exc}") from exc
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ConfigError(f"{path}: expected a pickled (images, issame) tuple, got {type(data).__name__}")
    return data[0], data[1]


def read_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """Read an InsightFace verification ``.bin`` file.

    The file is a pickle of ``(bins, issame_list)``: ``2N`` encoded images (JPEG/PNG bytes),
    pair ``i`` being images ``2i`` and ``2i + 1``, and ``N`` booleans. Only open files you trust:
    unpickling can run code.

    Args:
        path: the ``.bin`` file.

    Returns:
        ``(images, issame)``: a list of ``2N`` ``bytes`` and an ``(N,)`` ``bool`` array.

    Raises:
        ConfigError: the file is not such a pickle, or the counts disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such .bin file")
    bins, issame = _unpickle(path)
    images = [bytes(b) if not isinstance(b, bytes) else b for b in bins]
    flags = np.asarray(list(issame), dtype=bool)
    if len(images) != 2 * len(flags):
        raise ConfigError(f"{path}: {len(images)} images for {len(flags)} pairs (expected {2 * len(flags)})")
    return images, flags


def write_bin(path: str | os.PathLike, images: Sequence[bytes | np.ndarray], issame: Sequence[bool]) -> None:
    """Write an InsightFace verification ``.bin`` file.

    Args:
        path: output file.
        images: ``2N`` images, pair ``i`` = ``(images[2i], images[2i+1])``: encoded bytes, or
            ``(H, W, 3)`` ``uint8`` BGR arrays (encoded here as JPEG, quality 95).
        issame: ``N`` genuine flags.

    Raises:
        ConfigError: counts disagree or an image cannot be encoded.
    """
    import cv2

    flags = [bool(v) for v in issame]
    if len(images) != 2 * len(flags):
        raise ConfigError(f"{len(images)} images for {len(flags)} pairs (expected {2 * len(flags)})")
    bins = []
    for i, img in enumerate(images):
        if isinstance(img, (bytes, bytearray, memoryview)):
            bins.append(bytes(img))
            continue
        ok, buf = cv2.imencode(".jpg", np.asarray(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise ConfigError(f"image {i} could not be encoded as JPEG")
        bins.append(buf.tobytes())
    with open(path, "wb") as f:
        pickle.dump((bins, flags), f, protocol=pickle.HIGHEST_PROTOCOL)


def load_bin_pairs(path: str | os.PathLike) -> PairSet:
    """Read a ``.bin`` file as a :class:`PairSet` of aligned crops (no folds: contiguous 10-fold)."""
    images, flags = read_bin(path)
    pairs = np.arange(len(images), dtype=np.int64).reshape(-1, 2)
    return PairSet(list(images), pairs, flags, None, aligned=True, name=Path(path).name)


class _Items:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, item: str) -> int:
        i = self.index.get(item)
        if i is None:
            i = self.index[item] = len(self.items)
            self.items.append(item)
        return i


def _lfw_path(root: Path, name: str, number: str, ext: str) -> str:
    try:
        n = int(number)
    except ValueError as exc:
        raise ConfigError(f"LFW image number {number!r} is not an integer") from exc
    return str(root / name / f"{name}_{n:04d}{ext}")


def read_lfw_pairs(path: str | os.PathLike, image_root: str | os.PathLike | None = None, ext: str = ".jpg") -> PairSet:
    """Read an LFW ``pairs.txt`` (View 2: ``10 300`` header, then per fold 300 matched + 300 mismatched lines).

    Matched lines are ``name n1 n2``, mismatched ``name1 n1 name2 n2``; an image is
    ``<root>/<name>/<name>_<nnnn>.jpg``. A one-number header ``N`` (View 1's ``pairsDevTrain``)
    gives one fold of ``N`` matched then ``N`` mismatched pairs.

    Args:
        path: the pairs file.
        image_root: folder of the per-person folders (default: the pairs file's folder).
        ext: image file extension.

    Returns:
        A :class:`PairSet` with ``folds`` set (0-based).

    Raises:
        ConfigError: malformed header or line, or counts that disagree with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such pairs file")
    root = Path(image_root) if image_root is not None else path.parent
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{path}: empty pairs file")
    header = lines[0]
    try:
        if len(header) == 2:
            n_folds, per_fold = int(header[0]), int(header[1])
        elif len(header) == 1:
            n_folds, per_fold = 1, int(header[0])
        else:
            raise ValueError
    except ValueError as exc:
        raise ConfigError(
            f"{path}: first line must be '<folds> <pairs per class>' or '<pairs>', got {' '.join(header)!r}"
        ) from exc
    body = lines[1:]
    if len(body) != n_folds * 2 * per_fold:
        raise ConfigError(
            f"{path}: header promises {n_folds} x 2 x {per_fold} pairs but the file has {len(body)} lines"
        )
    items = _Items()
    pairs, issame, folds = [], [], []
    for k, fields in enumerate(body):
        fold, pos = divmod(k, 2 * per_fold)
        if len(fields) == 3:
            a = _lfw_path(root, fields[0], fields[1], ext)
            b = _lfw_path(root, fields[0], fields[2], ext)
            same = True
        elif len(fields) == 4:
            a = _lfw_path(root, fields[0], fields[1], ext)
            b = _lfw_path(root, fields[2], fields[3], ext)
            same = False
        else:
            raise ConfigError(f"{path}: line {k + 2} has {len(fields)} fields (expected 3 or 4)")
        if same != (pos < per_fold):
            raise ConfigError(f"{path}: line {k + 2}: expected a {'matched' if pos < per_fold else 'mismatched'} pair")
        pairs.append((items.add(a), items.add(b)))
        issame.append(same)
        folds.append(fold)
    return PairSet(items.items, np.array(pairs), np.array(issame), np.array(folds), aligned=False, name=path.name)


def _parse_flag(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE_WORDS:
        return True
    if v in _FALSE_WORDS:
        return False
    raise ConfigError(f"{where}: cannot read {value!r} as same/different (use yes/no, true/false or 1/0)")


def _find_column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` (lower case) among the CSV ``columns``, case and space insensitive; its spelling."""
    lower = {c.strip().lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, path: Path) -> str:
    found = _find_column(columns, candidates)
    if found is not None:
        return found
    raise ConfigError(f"{path}: no {what} column among {columns}; expected one of {list(candidates)}")


def read_csv_pairs(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    left: str | None = None,
    right: str | None = None,
    label: str | None = None,
) -> PairSet:
    """Read a CSV pair list such as deepface's ``master.csv`` (``file_x,file_y,Decision`` with Yes/No).

    Column names are matched case-insensitively: left ``file_x/img1/image1/left/...``, right
    ``file_y/img2/image2/right/...``, label ``Decision/label/issame/same/...``; pass ``left``,
    ``right``, ``label`` to name them explicitly. Labels may be yes/no, true/false, 1/0,
    same/different.

    Args:
        path: the CSV file (comma-separated, with a header row).
        image_root: folder the image names are relative to (default: the CSV's folder).
        left: name of the first image column.
        right: name of the second image column.
        label: name of the label column.

    Returns:
        A :class:`PairSet` of photos, without folds.

    Raises:
        ConfigError: missing columns or unreadable labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such CSV file")
    root = Path(image_root) if image_root is not None else path.parent
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise ConfigError(f"{path}: empty CSV (no header row)")
        lcol = left or _pick(columns, _LEFT_COLUMNS, "first-image", path)
        rcol = right or _pick(columns, _RIGHT_COLUMNS, "second-image", path)
        ycol = label or _pick(columns, _LABEL_COLUMNS, "label", path)
        for col in (lcol, rcol, ycol):
            if col not in columns:
                raise ConfigError(f"{path}: no column {col!r} (columns: {columns})")
        items = _Items()
        pairs, issame = [], []
        for row_no, row in enumerate(reader, start=2):
            a, b, y = (row.get(lcol) or "").strip(), (row.get(rcol) or "").strip(), row.get(ycol) or ""
            if not a and not b:
                continue
            if not a or not b:
                raise ConfigError(f"{path}: line {row_no}: missing image name")
            pa = a if os.path.isabs(a) else str(root / a)
            pb = b if os.path.isabs(b) else str(root / b)
            pairs.append((items.add(pa), items.add(pb)))
            issame.append(_parse_flag(y, f"{path}: line {row_no}"))
    if not pairs:
        raise ConfigError(f"{path}: no pairs")
    return PairSet(items.items, np.array(pairs), np.array(issame), None, aligned=False, name=path.name)


def identity_folder_pairs(
    root: str | os.PathLike,
    *,
    n_impostors: int | None = None,
    seed: int = 0,
    max_genuine: int | None = None,
    aligned: bool = False,
) -> PairSet:
    """Pairs from a folder of identity sub-folders: every genuine pair plus seeded random impostors.

    ``root/<identity>/<image>``: all within-identity image pairs are genuine (optionally a seeded
    random subset of ``max_genuine``); impostor pairs are drawn uniformly (seeded, without
    repetition) from images of different identities.

    Args:
        root: folder with one sub-folder per identity.
        n_impostors: number of impostor pairs (default: as many as genuine pairs, capped by the
            number of possible impostor pairs).
        seed: random seed for the sampling.
        max_genuine: keep at most this many genuine pairs.
        aligned: the images are aligned crops (embed directly) rather than photos.

    Returns:
        A :class:`PairSet` (genuine pairs first, then impostors), without folds.

    Raises:
        ConfigError: fewer than two identities or no genuine pair.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    identities = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(str(p) for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            identities.append(files)
    if len(identities) < 2:
        raise ConfigError(f"{root}: need at least two identity sub-folders with images, found {len(identities)}")
    items = [f for files in identities for f in files]
    owner = np.concatenate([np.full(len(files), k) for k, files in enumerate(identities)])
    starts = np.cumsum([0] + [len(f) for f in identities])
    rng = np.random.default_rng(seed)
    genuine = [
        (starts[k] + i, starts[k] + j)
        for k, files in enumerate(identities)
        for i, j in itertools.combinations(range(len(files)), 2)
    ]
    if not genuine:
        raise ConfigError(f"{root}: no identity has two images, so there is no genuine pair")
    if max_genuine is not None and len(genuine) > max_genuine:
        keep = np.sort(rng.choice(len(genuine), size=max_genuine, replace=False))
        genuine = [genuine[i] for i in keep]
    n = len(items)
    same_pairs = sum(len(f) * (len(f) - 1) // 2 for f in identities)
    possible = n * (n - 1) // 2 - same_pairs
    want = len(genuine) if n_impostors is None else int(n_impostors)
    want = min(want, possible)
    chosen: set[tuple[int, int]] = set()
    impostors: list[tuple[int, int]] = []
    if want > possible // 2 and possible <= 2_000_000:
        # dense request: enumerate every cross-identity pair and draw without replacement
        i, j = np.triu_indices(n, 1)
        cross = owner[i] != owner[j]
        i, j = i[cross], j[cross]
        pick = np.sort(rng.choice(len(i), size=want, replace=False))
        impostors = list(zip(i[pick].tolist(), j[pick].tolist()))
    while len(impostors) < want:
        a = rng.integers(0, n, size=2 * (want - len(impostors)) + 16)
        b = rng.integers(0, n, size=len(a))
        for i, j in zip(a.tolist(), b.tolist()):
            if owner[i] == owner[j]:
                continue
            key = (min(i, j), max(i, j))
            if key in chosen:
                continue
            chosen.add(key)
            impostors.append(key)
            if len(impostors) == want:
                break
    pairs = np.array(genuine + impostors, dtype=np.int64).reshape(-1, 2)
    issame = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostors), bool)]
    return PairSet(items, pairs, issame, None, aligned=aligned, name=root.name)


def load_pairs(path: str | os.PathLike, image_root: str | os.PathLike | None = None, **kwargs: object) -> PairSet:
    """Read any supported pair source, chosen by what ``path`` is.

    ``.bin`` → :func:`load_bin_pairs`; ``.csv`` → :func:`read_csv_pairs`; a folder →
    :func:`identity_folder_pairs`; any other text file → :func:`read_lfw_pairs`.

    Args:
        path: the pair source.
        image_root: image folder for CSV and LFW lists.
        **kwargs: passed to the chosen reader.
    """
    p = Path(path)
    if p.is_dir():
        return identity_folder_pairs(p, **kwargs)  # type: ignore[arg-type]
    if not p.exists():
        raise ConfigError(f"{p}: no such pair file or folder")
    suffix = p.suffix.lower()
    if suffix == ".bin":
        return load_bin_pairs(p)
    if suffix == ".csv":
        return read_csv_pairs(p, image_root, **kwargs)  # type: ignore[arg-type]
    return read_lfw_pairs(p, image_root, **kwargs)  # type: ignore[arg-type]
