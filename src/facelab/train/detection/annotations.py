"""Face-detection annotation files: RetinaFace ``label.txt``, SCRFD ``labelv2.txt``, WIDER FACE, COCO, dlib XML.

Every reader returns a list of :class:`ImageAnnotation` — one per image, boxes ``[x1, y1, x2, y2]``
in pixels (``float32``), five keypoints ``(x, y, weight)`` per box (weight 0 = not annotated) in
the order left eye, right eye, nose, left mouth corner, right mouth corner *as seen in the image*
(:class:`facelab.FaceKeypoint`), and an ignore flag per box. The formats:

* ``retinaface`` — ``label.txt`` of biubug6/Pytorch_Retinaface and InsightFace's MXNet RetinaFace:
  ``# <image path>`` then one face per line ``x y w h`` optionally followed by five
  ``lx ly flag`` triples and a blur/quality score (20 values). Landmarks written as ``-1`` are
  missing; as in biubug6's loader every point of a face with landmarks gets weight 1 (the
  visibility flag, 0 visible / 1 occluded, is not used as a weight).
* ``scrfd`` — ``labelv2.txt`` of InsightFace's SCRFD (``mmdet/datasets/retinaface.py``):
  ``# <image path> <width> <height>`` then ``x1 y1 x2 y2``, optionally five ``x y flag`` triples
  (a point written all ``-1`` has weight 0, any other weight 1), or a fifth value that is the
  ignore flag (1 = ignore).
* ``wider`` — the official ``wider_face_{train,val}_bbx_gt.txt``: an image path line, a count
  line, then ``x y w h blur expression illumination invalid occlusion pose`` per face (an image
  with 0 faces still has one all-zero line); ``invalid == 1`` and zero-sized boxes are ignored.
* ``coco`` — COCO-style JSON (``images``, ``annotations`` with ``bbox [x, y, w, h]``,
  ``iscrowd`` / ``ignore`` → ignored, optional ``keypoints`` of five ``x, y, v`` with ``v == 0``
  → weight 0), one category or the category named ``face``.
* ``dlib`` — dlib imglab XML (``<image file=...><box top left width height [ignore]>``), as
  :func:`facelab.eval.detection_ap.read_dlib_xml` reads it; no keypoints.

A malformed annotation raises :class:`AnnotationError` whose message names the file, the line
and what is wrong. Image paths are resolved against ``image_root`` (default: the ``images``
folder beside a ``label.txt`` / ``labelv2.txt`` when it exists, else the annotation file's
folder). numpy only; no torch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError
from facelab.registry import Registry

__all__ = [
    "ANNOTATION_FORMATS",
    "AnnotationError",
    "ImageAnnotation",
    "detect_format",
    "load_annotations",
    "to_box_gt",
    "NUM_KEYPOINTS",
    "FLIP_ORDER",
]

_logger = logging.getLogger(__name__)

#: Keypoints per face (left eye, right eye, nose, left mouth corner, right mouth corner).
NUM_KEYPOINTS = 5
#: Keypoint order after a horizontal flip (left and right swap).
FLIP_ORDER = (1, 0, 2, 4, 3)


class AnnotationError(ConfigError):
    """An annotation file is missing or malformed; the message names the file and line."""


@dataclass
class ImageAnnotation:
    """The faces annotated in one image.

    Attributes:
        path: the image file.
        boxes: ``(N, 4)`` ``float32`` ``[x1, y1, x2, y2]`` pixels.
        keypoints: ``(N, 5, 3)`` ``float32`` ``(x, y, weight)``; weight 0 = not annotated.
        ignore: ``(N,)`` ``bool``: faces that should neither be learnt nor counted (crowds, invalid, tiny).
        width: image width from the annotation file, when it gives one.
        height: image height from the annotation file, when it gives one.
    """

    path: Path
    boxes: np.ndarray
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_KEYPOINTS, 3), np.float32))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        kps = np.asarray(self.keypoints, np.float32)
        self.keypoints = kps.reshape(n, NUM_KEYPOINTS, 3) if kps.size else np.zeros((n, NUM_KEYPOINTS, 3), np.float32)
        ign = np.asarray(self.ignore, bool).reshape(-1)
        self.ignore = ign if len(ign) == n else np.zeros(n, bool)

    @property
    def has_keypoints(self) -> bool:
        """Whether any face of the image has an annotated keypoint."""
        return bool((self.keypoints[:, :, 2] > 0).any())


def _error(path: Path, line: int | None, message: str, text: str | None = None) -> AnnotationError:
    where = f"{path}:{line}" if line is not None else str(path)
    return AnnotationError(f"{where}: {message}" + (f": {text.strip()!r}" if text is not None else ""))


def _floats(path: Path, number: int, text: str, counts: Sequence[int]) -> list[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise _error(path, number, "not a list of numbers", text) from None
    if len(values) not in counts:
        raise _error(path, number, f"expected {' or '.join(map(str, counts))} numbers, got {len(values)}", text)
    if not all(np.isfinite(values)):
        raise _error(path, number, "non-finite number", text)
    return values


def _check_box(path: Path, number: int, box: Sequence[float], text: str) -> None:
    if box[2] < box[0] or box[3] < box[1]:
        raise _error(path, number, "box has x2 < x1 or y2 < y1", text)


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(path, None, "no such annotation file") from None
    except UnicodeDecodeError as exc:
        raise _error(path, None, f"not a UTF-8 text file ({exc})") from None
    return [(i + 1, ln) for i, ln in enumerate(raw.splitlines()) if ln.strip()]


def _kps_weight(points: np.ndarray) -> np.ndarray:
    """``(5, 3)`` ``(x, y, flag)`` → weights: a point written all ``-1`` has weight 0, any other 1."""
    out = points.copy()
    missing = np.all(points == -1, axis=1)
    out[:, 2] = np.where(missing, 0.0, 1.0)
    out[missing, :2] = 0.0
    return out


def _grouped(path: Path, header_tokens: int | None) -> list[tuple[int, list[str], list[tuple[int, str]]]]:
    """``# ...`` header lines and the face lines under each."""
    groups: list[tuple[int, list[str], list[tuple[int, str]]]] = []
    for number, line in _lines(path):
        text = line.strip()
        if text.startswith("#"):
            tokens = text[1:].split()
            if not tokens:
                raise _error(path, number, "image line without a path", line)
            if header_tokens is not None and len(tokens) != header_tokens:
                raise _error(path, number, "image line must be '# <path> <width> <height>'", line)
            groups.append((number, tokens, []))
        else:
            if not groups:
                raise _error(path, number, "face line before the first '# <image>' line", line)
            groups[-1][2].append((number, line))
    return groups


def _read_retinaface(path: Path, root: Path) -> list[ImageAnnotation]:
    out = []
    for _, tokens, faces in _grouped(path, None):
        boxes, kps = [], []
        for number, line in faces:
            v = _floats(path, number, line, (4, 19, 20))
            x, y, w, h = v[:4]
            box = [x, y, x + w, y + h]
            _check_box(path, number, box, line)
            points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
            if len(v) > 4 and v[4] >= 0:
                points[:, :2] = np.asarray(v[4:19], np.float32).reshape(5, 3)[:, :2]
                points[:, 2] = 1.0
            boxes.append(box)
            kps.append(points)
        out.append(ImageAnnotation(root / tokens[0], np.array(boxes), np.array(kps), np.zeros(len(boxes), bool)))
    return out


def _read_scrfd(path: Path, root: Path) -> list[ImageAnnotation]:
    out = []
    for number, tokens, faces in _grouped(path, 3):
        try:
            width, height = int(tokens[1]), int(tokens[2])
        except ValueError:
            raise _error(path, number, "width and height must be integers", " ".join(tokens)) from None
        boxes, kps, ignore = [], [], []
        for n, line in faces:
            v = _floats(path, n, line, (4, 5, 19))
            _check_box(path, n, v[:4], line)
            points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
            flag = False
            if len(v) == 19:
                points = _kps_weight(np.asarray(v[4:19], np.float32).reshape(5, 3))
            elif len(v) == 5:
                if v[4] not in (0.0, 1.0):
                    raise _error(path, n, "the fifth value (ignore flag) must be 0 or 1", line)
                flag = v[4] == 1.0
            boxes.append(v[:4])
            kps.append(points)
            ignore.append(flag)
        out.append(ImageAnnotation(root / tokens[0], np.array(boxes), np.array(kps), np.array(ignore), width, height))
    return out


def _read_wider(path: Path, root: Path) -> list[ImageAnnotation]:
    lines = _lines(path)
    out = []
    i = 0
    while i < len(lines):
        number, name = lines[i]
        name = name.strip()
        if len(name.split()) != 1 or name.lstrip("-").isdigit():
            raise _error(path, number, "expected an image path line", name)
        if i + 1 >= len(lines):
            raise _error(path, number, "image line without a face count")
        count_no, count_text = lines[i + 1]
        try:
            count = int(count_text.strip())
        except ValueError:
            raise _error(path, count_no, "expected the number of faces", count_text) from None
        if count < 0:
            raise _error(path, count_no, "negative face count", count_text)
        rows = max(count, 1)  # an image without faces still has one all-zero line
        if i + 2 + rows > len(lines):
            raise _error(path, count_no, f"{count} faces announced but the file ends early")
        boxes, ignore = [], []
        for number_f, line in lines[i + 2 : i + 2 + rows]:
            v = _floats(path, number_f, line, (10,))
            if count == 0:
                continue
            x, y, w, h = v[:4]
            if w < 0 or h < 0:
                raise _error(path, number_f, "negative box width or height", line)
            boxes.append([x, y, x + w, y + h])
            ignore.append(v[7] == 1 or w == 0 or h == 0)
        out.append(ImageAnnotation(root / name, np.array(boxes).reshape(-1, 4), ignore=np.array(ignore, bool)))
        i += 2 + rows
    return out


def _read_coco(path: Path, root: Path) -> list[ImageAnnotation]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _error(path, None, "no such annotation file") from None
    except json.JSONDecodeError as exc:
        raise _error(path, exc.lineno, f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _error(path, None, "a COCO file needs an 'images' list")
    cats = data.get("categories") or []
    face_ids = {c.get("id") for c in cats if str(c.get("name", "")).lower() == "face"}
    if not face_ids:
        face_ids = {c.get("id") for c in cats} if len(cats) <= 1 else set()
        if len(cats) > 1:
            raise _error(path, None, f"{len(cats)} categories and none is named 'face'")
    images: dict[Any, dict[str, Any]] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise _error(path, None, f"images[{k}] needs 'id' and 'file_name'")
        images[img["id"]] = {"info": img, "boxes": [], "kps": [], "ignore": []}
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise _error(path, None, f"{where}: unknown or missing image_id")
        if face_ids and ann.get("category_id", next(iter(face_ids))) not in face_ids:
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise _error(path, None, f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise _error(path, None, f"{where}: bbox must be numbers, got {bbox!r}") from None
        if w < 0 or h < 0:
            raise _error(path, None, f"{where}: negative bbox width or height {bbox!r}")
        points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        raw = ann.get("keypoints")
        if raw:
            if len(raw) != 3 * NUM_KEYPOINTS:
                raise _error(path, None, f"{where}: keypoints must hold 5 (x, y, v) triples, got {len(raw)} values")
            points = np.asarray(raw, np.float32).reshape(NUM_KEYPOINTS, 3)
            points[:, 2] = (points[:, 2] > 0).astype(np.float32)
        entry = images[ann["image_id"]]
        entry["boxes"].append([x, y, x + w, y + h])
        entry["kps"].append(points)
        entry["ignore"].append(bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)))
    out = []
    for entry in images.values():
        info = entry["info"]
        out.append(
            ImageAnnotation(
                root / info["file_name"],
                np.array(entry["boxes"]).reshape(-1, 4),
                np.array(entry["kps"]).reshape(-1, NUM_KEYPOINTS, 3),
                np.array(entry["ignore"], bool),
                info.get("width"),
                info.get("height"),
            )
        )
    return out


def _read_dlib(path: Path, root: Path) -> list[ImageAnnotation]:
    """Read a dlib imglab XML file with expat, so that errors can name the line."""
    import xml.parsers.expat

    out: list[ImageAnnotation] = []
    current: dict[str, Any] | None = None
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal current
        line = parser.CurrentLineNumber
        if tag == "image":
            if not attrs.get("file"):
                raise _error(path, line, "<image> without a file attribute")
            current = {"file": attrs["file"], "boxes": [], "ignore": []}
        elif tag == "box":
            if current is None:
                raise _error(path, line, "<box> outside an <image>")
            try:
                top, left = float(attrs["top"]), float(attrs["left"])
                width, height = float(attrs["width"]), float(attrs["height"])
            except (KeyError, ValueError):
                raise _error(path, line, "<box> needs numeric top, left, width and height", str(attrs)) from None
            if width < 0 or height < 0:
                raise _error(path, line, "<box> with a negative width or height", str(attrs))
            current["boxes"].append([left, top, left + width, top + height])
            current["ignore"].append(attrs.get("ignore", "0").strip().lower() in ("1", "true"))

    def end(tag: str) -> None:
        nonlocal current
        if tag == "image" and current is not None:
            boxes = np.array(current["boxes"]).reshape(-1, 4)
            out.append(ImageAnnotation(root / current["file"], boxes, ignore=np.array(current["ignore"], bool)))
            current = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, None, "no such annotation file") from None
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise _error(path, exc.lineno, f"not valid XML ({xml.parsers.expat.ErrorString(exc.code)})") from None
    return out


#: Readers by format name: ``(annotation file, image root) -> [ImageAnnotation]``.
ANNOTATION_FORMATS: Registry[Callable[[Path, Path], list[ImageAnnotation]]] = Registry("annotation format")
ANNOTATION_FORMATS.register("retinaface")(_read_retinaface)
ANNOTATION_FORMATS.register("scrfd")(_read_scrfd)
ANNOTATION_FORMATS.register("wider")(_read_wider)
ANNOTATION_FORMATS.register("coco")(_read_coco)
ANNOTATION_FORMATS.register("dlib")(_read_dlib)


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of an annotation file from its suffix and first line.

    ``.json`` → ``coco``; ``.xml`` → ``dlib``; a first line ``# path w h`` → ``scrfd``;
    ``# path`` → ``retinaface``; an image path line → ``wider``.

    Raises:
        AnnotationError: missing file or a first line that fits none of them.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        return "coco"
    if p.suffix.lower() == ".xml":
        return "dlib"
    lines = _lines(p)
    if not lines:
        raise _error(p, None, "empty annotation file")
    number, first = lines[0]
    text = first.strip()
    if text.startswith("#"):
        tokens = text[1:].split()
        if len(tokens) == 3 and all(t.lstrip("-").isdigit() for t in tokens[1:]):
            return "scrfd"
        return "retinaface"
    if text.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")):
        return "wider"
    raise _error(p, number, "cannot tell the annotation format from the first line", first)


def _default_root(path: Path, fmt: str) -> Path:
    if fmt in ("retinaface", "scrfd") and (path.parent / "images").is_dir():
        return path.parent / "images"
    return path.parent


def load_annotations(
    path: str | os.PathLike,
    fmt: str = "auto",
    image_root: str | os.PathLike | None = None,
    *,
    min_size: float = 0.0,
    check_images: bool = True,
) -> list[ImageAnnotation]:
    """Read an annotation file into :class:`ImageAnnotation` records.

    Args:
        path: the annotation file.
        fmt: one of :data:`ANNOTATION_FORMATS` (``retinaface``, ``scrfd``, ``wider``, ``coco``,
            ``dlib``) or ``"auto"`` (:func:`detect_format`).
        image_root: folder the image paths are relative to (default: see the module doc).
        min_size: faces whose width or height is below this many pixels are marked ignored
            (SCRFD's ``min_size`` option); 0 keeps all.
        check_images: raise when an image file does not exist.

    Returns:
        The images in file order.

    Raises:
        AnnotationError: malformed content (the message names the file and line), an unknown
            format, or a missing image.
    """
    p = Path(path)
    if not p.is_file():
        raise _error(p, None, "no such annotation file")
    name = detect_format(p) if fmt == "auto" else fmt
    if name not in ANNOTATION_FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r}; known: {ANNOTATION_FORMATS.names()} or 'auto'")
    root = Path(image_root) if image_root else _default_root(p, name)
    records = ANNOTATION_FORMATS.get(name)(p, root)
    if min_size > 0:
        for rec in records:
            w = rec.boxes[:, 2] - rec.boxes[:, 0]
            h = rec.boxes[:, 3] - rec.boxes[:, 1]
            rec.ignore = rec.ignore | (w < min_size) | (h < min_size)
    if check_images:
        missing = [str(r.path) for r in records if not r.path.is_file()]
        if missing:
            raise AnnotationError(
                f"{p}: {len(missing)} of {len(records)} images not found under {root} (first: {missing[0]}); "
                "set the image root"
            )
    _logger.debug("%s (%s): %d images, %d faces", p, name, len(records), sum(len(r.boxes) for r in records))
    return records


def to_box_gt(records: Sequence[ImageAnnotation]) -> dict[str, Any]:
    """``{str(path): BoxGT}`` for :func:`facelab.eval.detection_ap.detection_ap` (ignored faces stay ignored)."""
    from facelab.eval.detection_ap import BoxGT

    return {str(r.path): BoxGT(r.boxes.astype(np.float64), r.ignore.copy()) for r in records}
