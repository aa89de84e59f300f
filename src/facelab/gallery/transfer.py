"""Moving galleries: Parquet export/import with a manifest, and re-embedding with another model.

Export layout (one folder)::

    manifest.json        format "facelab-gallery-export", version, collections (contracts, counts),
                         files with their SHA-256 and row counts (written last)
    collections.parquet  persons.parquet  images.parquet  faces.parquet  links.parquet

Faces carry their embedding (``list<float32>``, unit length), box, keypoints, quality, source
and crop (binary JPEG, when stored); paths are kept as the OS bytes. Import checks the manifest
and every file's hash, then writes each collection in one transaction under new ids.

Re-embedding (:func:`reembed_collection`) runs a new pack over the source photos of every
face (the photo must still exist with the same SHA-256), matches the new detections to the
stored faces by box overlap (IoU ≥ 0.5, best first), and writes a new collection with the new
embedding contract: persons, names and assignments are kept; photo-library images gain the faces
the new detector finds in addition. Faces that cannot be re-embedded are listed in the report.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import ConfigError, GalleryError
from facelab.gallery.contract import contract_of
from facelab.gallery.records import EmbeddingContract, NewFace
from facelab.gallery.store import ImageWrite, path_bytes
from facelab.version import __version__
from facelab.zoo._hub import sha256_file

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "export_gallery", "import_gallery", "reembed_collection", "REEMBED_IOU"]

_logger = logging.getLogger(__name__)

#: ``manifest.json``'s ``format``.
EXPORT_FORMAT = "facelab-gallery-export"
#: Version of the export layout.
EXPORT_VERSION = 1
#: Smallest box IoU for a new detection to take over a stored face in :func:`reembed_collection`.
REEMBED_IOU = 0.5

_TABLES = ("collections", "persons", "images", "faces", "links")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError('gallery export/import needs pyarrow: pip install "facelab[parquet]"') from None
    return pa, pq


def _schemas(pa: Any) -> dict[str, Any]:
    f32 = pa.list_(pa.float32())
    return {
        "collections": pa.schema([
            ("id", pa.int64()), ("name", pa.string()), ("threshold", pa.float64()), ("contract", pa.string()),
            ("save_crops", pa.bool_()), ("metadata", pa.string()),
        ]),
        "persons": pa.schema([
            ("id", pa.int64()), ("collection_id", pa.int64()), ("name", pa.string()), ("external_id", pa.string()),
            ("kind", pa.string()), ("metadata", pa.string()), ("created_at", pa.float64()),
        ]),
        "images": pa.schema([
            ("id", pa.int64()), ("collection_id", pa.int64()), ("path", pa.binary()), ("sha256", pa.string()),
            ("size", pa.int64()), ("mtime_ns", pa.int64()), ("width", pa.int64()), ("height", pa.int64()),
            ("status", pa.string()), ("error", pa.string()),
        ]),
        "faces": pa.schema([
            ("id", pa.int64()), ("collection_id", pa.int64()), ("person_id", pa.int64()), ("image_id", pa.int64()),
            ("source", pa.string()), ("assigned_by", pa.string()), ("bbox", f32), ("kps", f32),
            ("det_score", pa.float64()), ("quality", pa.float64()), ("quality_detail", pa.string()),
            ("source_sha256", pa.string()), ("source_path", pa.binary()), ("crop", pa.binary()), ("embedding", f32),
        ]),
        "links": pa.schema([
            ("collection_id", pa.int64()), ("face_a", pa.int64()), ("face_b", pa.int64()), ("kind", pa.string()),
        ]),
    }  # fmt: skip


def export_gallery(gallery: Any, folder: str | os.PathLike, *, collections: list[str] | None = None) -> dict[str, Any]:
    """Write collections (default: all) to ``folder`` as Parquet files plus ``manifest.json``.

    Args:
        gallery: the :class:`~facelab.gallery.Gallery`.
        folder: a new or empty folder.
        collections: names to export (default: every collection).

    Returns:
        The manifest.

    Raises:
        GalleryError: the folder is not empty, or a named collection does not exist.
    """
    pa, pq = _pyarrow()
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise GalleryError(f"{out}: export folder is not empty")
    out.mkdir(parents=True, exist_ok=True)
    chosen = [gallery.collection(n) for n in collections] if collections else gallery.collections()
    schemas = _schemas(pa)
    writers = {t: pq.ParquetWriter(out / f"{t}.parquet", schemas[t]) for t in _TABLES}
    counts: dict[str, int] = dict.fromkeys(_TABLES, 0)
    summary = []
    store = gallery.store

    def put(table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            writers[table].write_table(pa.Table.from_pylist(rows, schema=schemas[table]))
            counts[table] += len(rows)

    try:
        for coll in chosen:
            contract = None if coll.contract is None else json.dumps(coll.contract.to_dict())
            put("collections", [{"id": coll.id, "name": coll.name, "threshold": coll.threshold, "contract": contract,
                                 "save_crops": coll.save_crops, "metadata": json.dumps(coll.metadata)}])  # fmt: skip
            persons = store.persons(coll.id)
            put("persons", [{"id": p.id, "collection_id": coll.id, "name": p.name, "external_id": p.external_id,
                             "kind": p.kind, "metadata": json.dumps(p.metadata), "created_at": p.created_at}
                            for p in persons])  # fmt: skip
            images = store.images(coll.id)
            put("images", [{"id": i.id, "collection_id": coll.id, "path": path_bytes(i.path), "sha256": i.sha256,
                            "size": i.size, "mtime_ns": i.mtime_ns, "width": i.width, "height": i.height,
                            "status": i.status, "error": i.error} for i in images])  # fmt: skip
            n_faces = 0
            for batch in store.iter_faces(coll.id, with_embeddings=True, with_crops=True):
                rows = []
                for face, crop in batch:
                    rows.append({
                        "id": face.id, "collection_id": coll.id, "person_id": face.person_id, "image_id": face.image_id,
                        "source": face.source, "assigned_by": face.assigned_by,
                        "bbox": None if face.bbox is None else face.bbox.tolist(),
                        "kps": None if face.kps is None else face.kps.reshape(-1).tolist(),
                        "det_score": face.det_score, "quality": face.quality,
                        "quality_detail": json.dumps(face.quality_detail), "source_sha256": face.source_sha256,
                        "source_path": None if face.image_id is not None or face.source_path is None
                        else path_bytes(face.source_path),
                        "crop": crop, "embedding": face.embedding.tolist(),
                    })  # fmt: skip
                put("faces", rows)
                n_faces += len(rows)
            links = store.links(coll.id)
            put("links", [{"collection_id": coll.id, "face_a": a, "face_b": b, "kind": k} for a, b, k in links])
            summary.append(
                {"name": coll.name, "contract": None if coll.contract is None else coll.contract.to_dict(),
                 "persons": len(persons), "images": len(images), "faces": n_faces, "links": len(links)}
            )  # fmt: skip
    finally:
        for writer in writers.values():
            writer.close()
    manifest = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "facelab": __version__,
        "created_at": time.time(),
        "source": store.url,
        "collections": summary,
        "files": {f"{t}.parquet": {"sha256": sha256_file(out / f"{t}.parquet"), "rows": counts[t]} for t in _TABLES},
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    return manifest


def _read_export(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    _, pq = _pyarrow()
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GalleryError(f"{folder}: no manifest.json (not a facelab gallery export, or an unfinished one)") from None
    except (OSError, ValueError) as exc:
        raise GalleryError(f"{folder}/manifest.json: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{folder}: manifest.json is not a facelab gallery export")
    if int(manifest.get("version", 0)) > EXPORT_VERSION:
        raise GalleryError(f"{folder}: export version {manifest.get('version')} is newer than this facelab reads")
    tables = {}
    for table in _TABLES:
        path = folder / f"{table}.parquet"
        expected = manifest.get("files", {}).get(path.name, {})
        if not path.is_file():
            raise GalleryError(f"{folder}: {path.name} is missing")
        if expected.get("sha256") != sha256_file(path):
            raise GalleryError(f"{folder}: {path.name} does not match the manifest's SHA-256 (damaged export)")
        tables[table] = pq.read_table(path).to_pylist()
    return manifest, tables


def import_gallery(gallery: Any, folder: str | os.PathLike, *, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """Read an export into ``gallery``; each collection in one transaction, under new ids.

    Args:
        gallery: the target gallery.
        folder: an export folder (:func:`export_gallery`).
        rename: ``{exported name: new name}``.

    Returns:
        ``{"collections": [{"name", "persons", "faces", "images"}]}``.

    Raises:
        GalleryError: not an export, a damaged file, or a collection name already in use.
    """
    manifest, tables = _read_export(Path(folder))
    rename = rename or {}
    store = gallery.store
    done = []
    by_coll: dict[str, dict[int, list[dict[str, Any]]]] = {t: defaultdict(list) for t in _TABLES[1:]}
    for table in _TABLES[1:]:
        for row in tables[table]:
            by_coll[table][row["collection_id"]].append(row)
    for crow in tables["collections"]:
        name = rename.get(crow["name"], crow["name"])
        if store.collection_by_name(name) is not None:
            raise GalleryError(f"collection {name!r} already exists here; import it under another name (--rename)")
    for crow in tables["collections"]:
        name = rename.get(crow["name"], crow["name"])
        contract = None if crow["contract"] is None else EmbeddingContract.from_dict(json.loads(crow["contract"]))
        old = crow["id"]
        with store.transaction():
            coll = store.create_collection(
                name, threshold=crow["threshold"], contract=contract, save_crops=bool(crow["save_crops"]),
                metadata=json.loads(crow["metadata"]),
            )  # fmt: skip
            persons = by_coll["persons"][old]
            kinds = defaultdict(list)
            for p in persons:
                kinds[p["kind"]].append(p)
            person_map: dict[int, int] = {}
            for kind, group in kinds.items():
                ids = store.add_persons(
                    coll.id, [(p["name"], p["external_id"], json.loads(p["metadata"])) for p in group], kind=kind
                )
                person_map.update(zip((p["id"] for p in group), ids))
            faces = by_coll["faces"][old]
            with store.bulk_load(coll.id):
                face_map = _import_faces(store, coll.id, faces, by_coll["images"][old], person_map)
            links = defaultdict(list)
            for link in by_coll["links"][old]:
                links[link["kind"]].append((face_map[link["face_a"]], face_map[link["face_b"]]))
            for kind, pairs in links.items():
                store.add_links(coll.id, pairs, kind)
        done.append({"name": name, "persons": len(persons), "faces": len(faces), "images": len(by_coll["images"][old])})
    return {"collections": done, "manifest": manifest}


def _new_face(row: dict[str, Any], person_map: dict[int, int]) -> NewFace:
    kps = row["kps"]
    return NewFace(
        np.asarray(row["embedding"], np.float32),
        person_id=None if row["person_id"] is None else person_map[row["person_id"]],
        source=row["source"], assigned_by=row["assigned_by"],
        bbox=None if row["bbox"] is None else np.asarray(row["bbox"], np.float32),
        kps=None if kps is None else np.asarray(kps, np.float32).reshape(5, 2),
        det_score=row["det_score"], quality=row["quality"], quality_detail=json.loads(row["quality_detail"] or "{}"),
        source_sha256=row["source_sha256"],
        source_path=None if row["source_path"] is None else Path(os.fsdecode(row["source_path"])),
        crop=row["crop"],
    )  # fmt: skip


def _import_faces(
    store: Any, cid: int, faces: list[dict[str, Any]], images: list[dict[str, Any]], person_map: dict[int, int]
) -> dict[int, int]:
    """Write faces (with their images) and return ``old face id -> new face id``."""
    face_map: dict[int, int] = {}
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    loose = []
    for row in faces:
        (per_image[row["image_id"]] if row["image_id"] is not None else loose).append(row)
    if loose:
        ids = store.add_faces(cid, [_new_face(r, person_map) for r in loose])
        face_map.update(zip((r["id"] for r in loose), ids))
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256]
        writes = []
        order = []
        for img in chunk:
            rows = per_image.get(img["id"], [])
            order += [r["id"] for r in rows]
            writes.append(
                ImageWrite(
                    Path(os.fsdecode(img["path"])),
                    img["sha256"],
                    img["size"],
                    img["mtime_ns"],
                    img["width"],
                    img["height"],
                    img["error"] if img["status"] == "error" else None,
                    [_new_face(r, person_map) for r in rows],
                )  # fmt: skip
            )
        added, _ = store.write_images(cid, writes)
        face_map.update(zip(order, added))
    return face_map


def _match(old_boxes: np.ndarray, new_boxes: np.ndarray) -> dict[int, int]:
    """Greedy best-IoU matching ``old index -> new index`` (IoU ≥ :data:`REEMBED_IOU`)."""
    from facelab.ops.boxes import iou_matrix

    if len(old_boxes) == 0 or len(new_boxes) == 0:
        return {}
    iou = iou_matrix(old_boxes.astype(np.float64), new_boxes.astype(np.float64))
    pairs = sorted(((iou[i, j], i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])), reverse=True)
    out: dict[int, int] = {}
    used: set[int] = set()
    for value, i, j in pairs:
        if value < REEMBED_IOU:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def reembed_collection(
    gallery: Any,
    name: str,
    analyzer: Any,
    *,
    target: str | None = None,
    keep_old: bool = False,
    batch_images: int = 8,
) -> dict[str, Any]:
    """Migrate a collection to ``analyzer``'s model (see the module docstring).

    Args:
        gallery: the gallery.
        name: the collection to migrate.
        analyzer: the new :class:`~facelab.pipeline.FaceAnalyzer`.
        target: name of the new collection; ``None`` replaces the old one under its name (the old
            one is deleted at the end, or kept as ``NAME@old`` with ``keep_old``).
        keep_old: keep the old collection.
        batch_images: photos analysed together.

    Returns:
        ``{"source", "target", "model", "faces", "new_faces", "lost": [{"face_id", "path", "reason"}]}``.

    Raises:
        GalleryError: the collection already uses this model, or ``target`` exists.
    """
    store = gallery.store
    src = gallery.collection(name)
    contract = contract_of(analyzer)
    if src.contract is not None and src.contract.id == contract.id:
        raise GalleryError(f"collection {name!r} already holds embeddings of {contract.describe()}")
    final = target or name
    work = target or f"{name}@reembed-{int(time.time())}"
    if target is not None and store.collection_by_name(target) is not None:
        raise GalleryError(f"collection {target!r} already exists")
    new = store.create_collection(work, contract=contract, save_crops=src.save_crops, metadata=src.metadata)
    lost: list[dict[str, Any]] = []
    counts = {"faces": 0, "new_faces": 0}
    try:
        persons = store.persons(src.id)
        person_map: dict[int, int] = {}
        for kind in ("named", "cluster"):
            group = [p for p in persons if p.kind == kind]
            ids = store.add_persons(new.id, [(p.name, p.external_id, p.metadata) for p in group], kind=kind)
            person_map.update(zip((p.id for p in group), ids))
        _reembed_faces(store, src, new, analyzer, person_map, lost, counts, batch_images)
    except BaseException:
        store.delete_collection(new.id)
        raise
    with store.transaction():
        if target is None:
            if keep_old:
                store.update_collection(src.id, name=f"{name}@old")
            else:
                store.delete_collection(src.id)
            store.update_collection(new.id, name=final)
    gallery._live.clear()
    if target is None and not keep_old:
        store.erase_deleted()
    return {"source": name, "target": final, "model": contract.describe(), **counts, "lost": lost}


def _reembed_faces(
    store: Any, src: Any, new: Any, analyzer: Any, person_map: dict[int, int], lost: list, counts: dict, batch: int
) -> None:
    """Re-embed every face of ``src`` into ``new`` (all photo-library images are analysed again)."""
    images = {path_bytes(i.path): i for i in store.images(src.id)}
    by_id = {i.id: key for key, i in images.items()}
    groups: dict[tuple[str, bytes], list[Any]] = {("image", key): [] for key, i in images.items() if i.status == "done"}
    for chunk in store.iter_faces(src.id, with_embeddings=False):
        for face, _ in chunk:
            if face.image_id is not None:
                groups.setdefault(("image", by_id[face.image_id]), []).append(face)
            elif face.source_path is not None:
                groups.setdefault(("enroll", path_bytes(face.source_path)), []).append(face)
            else:
                lost.append({"face_id": face.id, "path": None, "reason": "no source photo recorded"})
    failed = [i for i in images.values() if i.status == "error"]
    if failed:  # failed photos stay recorded as failed, so indexing does not retry unchanged ones
        store.write_images(new.id, [ImageWrite(i.path, i.sha256, i.size, i.mtime_ns, error=i.error) for i in failed])
    keys = sorted(groups)
    for start in range(0, len(keys), batch):
        loaded = _load_sources(keys[start : start + batch], groups, images, lost)
        results = analyzer.analyze_batch([item[1] for item in loaded]) if loaded else []
        writes, loose = [], []
        for (key, image, sha), found in zip(loaded, results):
            rows, extra = _carry_over(key, image, sha, groups[key], found, person_map, new.save_crops, lost)
            counts["faces"] += len(rows)
            if key[0] == "enroll":
                loose += rows
                continue
            counts["new_faces"] += len(extra)
            rec = images[key[1]]
            writes.append(
                ImageWrite(rec.path, sha, rec.size, rec.mtime_ns, image.shape[1], image.shape[0], None, rows + extra)
            )
        with store.transaction():
            if loose:
                store.add_faces(new.id, loose)
            if writes:
                store.write_images(new.id, writes)


def _load_sources(keys: list, groups: dict, images: dict, lost: list) -> list[tuple[Any, np.ndarray, str | None]]:
    """``(key, image, sha256)`` of the source photos that still exist unchanged; the others' faces are lost.

    Each photo file is read once: its hash and its image come from the same bytes.
    """
    from facelab.io.prefetch import load_decoded

    loaded = []
    for key in keys:
        path = Path(os.fsdecode(key[1]))
        faces = groups[key]
        sha = images[key[1]].sha256 if key[0] == "image" else faces[0].source_sha256
        decoded = load_decoded(path, digest=True)
        if decoded.sha256 is None and not path.exists():
            reason = "source photo missing"
        elif sha is not None and decoded.sha256 is not None and decoded.sha256 != sha:
            reason = f"{path}: the photo changed since it was stored"
        elif decoded.error is not None:
            reason = decoded.error
        else:
            loaded.append((key, decoded.image, sha))
            continue
        lost += [{"face_id": f.id, "path": str(path), "reason": reason} for f in faces]
    return loaded


def _carry_over(
    key: tuple[str, bytes],
    image: np.ndarray,
    sha: str | None,
    olds: list,
    found: list,
    person_map: dict[int, int],
    save_crops: bool,
    lost: list,
) -> tuple[list[NewFace], list[NewFace]]:
    """New faces that take over the stored ones (by IoU), and the photo's other new faces."""
    from facelab.gallery.enroll import new_face
    from facelab.gallery.indexing import faces_to_new

    boxes = (
        np.stack([f.bbox if f.bbox is not None else np.zeros(4, np.float32) for f in olds])
        if olds
        else np.zeros((0, 4))
    )
    matched = _match(boxes, np.stack([f.bbox for f in found]) if found else np.zeros((0, 4)))
    rows = []
    for i, old in enumerate(olds):
        face = found[matched[i]] if i in matched else None
        if face is None or face.embedding is None:
            lost.append({"face_id": old.id, "path": os.fsdecode(key[1]), "reason": "face not found again"})
            continue
        rows.append(
            new_face(
                face,
                image,
                sha,
                save_crops,
                source=old.source,
                assigned_by=old.assigned_by,
                person_id=None if old.person_id is None else person_map[old.person_id],
                source_path=None if key[0] == "image" else Path(os.fsdecode(key[1])),
            )
        )
    taken = set(matched.values())
    extra = (
        []
        if key[0] == "enroll"
        else faces_to_new(image, [f for j, f in enumerate(found) if j not in taken], sha, save_crops)
    )
    return rows, extra
