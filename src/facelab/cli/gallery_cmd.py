"""``facelab index``, ``facelab search``, ``facelab people ...`` and ``facelab gallery ...``.

Thin commands over :mod:`facelab.gallery`: they parse arguments, call the library and print.
The gallery comes from ``--gallery URL`` (or ``$FACELAB_GALLERY``): a path or ``sqlite:///...``
for a file, ``postgresql://...`` for PostgreSQL + pgvector.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from facelab.cli.analyze import (
    EXIT_SOME_FAILED,
    _add_model_options,
    _add_progress_options,
    _analyzer,
    _analyzer_options,
    _show_progress,
    _threshold,
)
from facelab.errors import ConfigError

__all__ = ["register"]

#: Environment variable naming the default gallery.
GALLERY_ENV = "FACELAB_GALLERY"


def _add_gallery_options(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument(
        "--gallery", "-g", default=None, metavar="URL",
        help=f"gallery: a file path, sqlite:///file.db or postgresql://... (default: ${GALLERY_ENV})",
    )  # fmt: skip
    parser.add_argument("--collection", "-c", default="default", help="collection (default: default)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")


def _open(args: argparse.Namespace) -> Any:
    from facelab.gallery import Gallery

    url = args.gallery or os.environ.get(GALLERY_ENV)
    if not url:
        raise ConfigError(f"no gallery given: use --gallery PATH_OR_URL or set {GALLERY_ENV}")
    return Gallery.open(url)


def _writable_collection(gallery: Any, args: argparse.Namespace) -> Any:
    """The ``--collection`` (created when missing); with ``--save-crops`` it keeps face crops from now on."""
    coll = gallery.collection(args.collection, create=True)
    if args.save_crops:
        coll = gallery.store.update_collection(coll.id, save_crops=True)
    return coll


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str))


def _progress_bar(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(callback, closer)`` drawing a tqdm bar with images/s and faces/s on a terminal (or ``--progress``)."""
    if not _show_progress(args):
        return None, lambda: None
    from tqdm import tqdm

    holder: dict[str, Any] = {}

    def update(state: Any) -> None:
        bar = holder.get("bar")
        if bar is None:
            bar = holder["bar"] = tqdm(total=state.total, unit="img", file=sys.stderr, desc="indexing")
        bar.n = state.done
        bar.set_postfix_str(f"{state.images_per_s:.2f} img/s, {state.faces_per_s:.2f} faces/s, {state.errors} errors")
        bar.refresh()

    def close() -> None:
        if "bar" in holder:
            holder["bar"].close()

    return update, close


# -- facelab index -------------------------------------------------------------------------------
def _cmd_index(args: argparse.Namespace) -> int:
    if not args.photos and not args.people_from_folders:
        raise ConfigError("give PHOTOS to index, --people-from-folders DIR, or both")
    failed = 0
    with _open(args) as gallery:
        if args.save_crops:
            _writable_collection(gallery, args)
        analyzer = None
        if args.people_from_folders:
            from facelab.gallery.enroll import enroll_folders

            analyzer = _enrol_analyzer(args)
            results = enroll_folders(
                gallery, args.people_from_folders, analyzer, collection=args.collection, review=args.review,
                select="largest" if args.largest else "single", is_live=_liveness(args),
            )  # fmt: skip
            for res in results:
                failed += len(res.rejected)
                if args.json:
                    _print_json({"enrolled": res.to_dict()})
                _report_enrolment(res)
        if args.photos:
            report = _index_photos(gallery, args, analyzer)
            failed += report.errors
            for path, error in report.failures:
                print(f"facelab index: skipped {error}" if path in error else f"facelab index: {path}: {error}",
                      file=sys.stderr)  # fmt: skip
            rate = report.indexed / report.elapsed if report.elapsed > 0 else 0.0
            print(
                f"{report.indexed} image(s) indexed ({report.faces_added} face(s)), {report.unchanged} unchanged, "
                f"{report.errors} error(s), {report.pruned} pruned in {report.elapsed:.1f} s ({rate:.2f} img/s)",
                file=sys.stderr,
            )
            if args.json:
                _print_json(report.to_dict())
    return EXIT_SOME_FAILED if failed else 0


def _index_photos(gallery: Any, args: argparse.Namespace, analyzer: Any) -> Any:
    update, close = _progress_bar(args)
    try:
        if args.ray:
            from facelab.gallery.ray_index import index_photos_ray

            return index_photos_ray(
                gallery, args.photos, _analyzer_options(args), collection=args.collection, address=args.ray,
                actors=args.ray_actors, cpus_per_actor=args.ray_cpus_per_actor, batch_images=args.batch_images,
                shards=args.shards, prune=args.prune, retry_errors=args.retry_errors, progress=update,
            )  # fmt: skip
        return gallery.index_photos(
            args.photos, analyzer or _analyzer(args), collection=args.collection, batch_images=args.batch_images,
            prune=args.prune, retry_errors=args.retry_errors, progress=update,
        )  # fmt: skip
    finally:
        close()


def _enrol_analyzer(args: argparse.Namespace) -> Any:
    """The analyser for enrolment and search: with ``--require-live``, every model of the pack plus liveness."""
    return _analyzer(args, ["all", "liveness"] if args.require_live else None)


def _liveness(args: argparse.Namespace) -> Any:
    from facelab.gallery.enroll import analyzer_liveness

    return analyzer_liveness if args.require_live else None


def _report_enrolment(res: Any) -> None:
    who = "nobody" if res.person is None else f"{res.person.label()} (id {res.person.id})"
    print(
        f"{who}: {len(res.face_ids)} face(s) enrolled, {len(res.rejected)} rejected, {len(res.skipped)} already there",
        file=sys.stderr,
    )
    for rej in res.rejected:
        print(f"  rejected {rej.source}: {', '.join(rej.reasons)} ({rej.detail})", file=sys.stderr)


# -- facelab search ------------------------------------------------------------------------------
def _cmd_search(args: argparse.Namespace) -> int:
    from facelab.errors import ImageError
    from facelab.io.paths import expand_image_inputs

    paths = expand_image_inputs(args.images)
    failed = 0
    with _open(args) as gallery:
        analyzer = _enrol_analyzer(args)
        coll = gallery.collection(args.collection)
        for path in paths:
            try:
                results = gallery.search_image(
                    path, analyzer, k=args.k, collection=coll.name, threshold=args.threshold, is_live=_liveness(args)
                )
            except ImageError as exc:
                failed += 1
                print(f"facelab search: skipped {exc}", file=sys.stderr)
                if args.json:
                    _print_json({"path": str(path), "error": str(exc)})
                continue
            photos = _similar_photos(gallery, coll, results, args.photos) if args.photos else None
            if args.json:
                record: dict[str, Any] = {"path": str(path), "faces": [r.to_dict() for r in results]}
                if photos is not None:
                    record["photos"] = photos
                _print_json(record)
                continue
            print(f"{path}: {len(results)} face(s)")
            for i, res in enumerate(results):
                x1, y1, x2, y2 = (round(float(v)) for v in res.face.bbox)
                best = res.best
                who = f"{best.label()} ({best.score:.3f})" if best is not None else "unknown"
                if res.rejected:
                    who = f"not searched: {res.rejected}"
                near = ", ".join(f"{m.label()} {m.score:.3f}" for m in res.matches[1:3])
                print(f"  [{i}] box=({x1},{y1},{x2},{y2}) {who}" + (f"  next: {near}" if near else ""))
                for item in (photos or [])[i] if photos else []:
                    print(f"      seen in {item['path']} ({item['score']:.3f})")
    return EXIT_SOME_FAILED if failed else 0


def _similar_photos(gallery: Any, coll: Any, results: list[Any], n: int) -> list[list[dict[str, Any]]]:
    if not results:
        return []
    # one search for every face of the photo, one read of the faces found
    found = gallery.search_faces([res.face.embedding for res in results], k=n, collection=coll.name)
    records = {f.id: f for f in gallery.store.faces(face_ids=sorted({h.face_id for hits in found for h in hits}))}
    return [
        [
            {"face_id": h.face_id, "score": h.score, "person_id": h.person_id,
             "path": None if records[h.face_id].source_path is None else str(records[h.face_id].source_path)}
            for h in hits
        ]
        for hits in found
    ]  # fmt: skip


# -- facelab people ------------------------------------------------------------------------------
def _person_dict(p: Any) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "external_id": p.external_id, "kind": p.kind, "faces": p.face_count,
            "metadata": p.metadata}  # fmt: skip


def _cmd_people_add(args: argparse.Namespace) -> int:
    from facelab.io.paths import expand_image_inputs

    metadata = _metadata(args.metadata)
    paths = expand_image_inputs(args.images)
    with _open(args) as gallery:
        analyzer = _enrol_analyzer(args)
        coll = _writable_collection(gallery, args)
        existing = gallery.store.persons(coll.id, name=args.name, kind="named")
        if args.new or not existing:
            target = {"name": args.name, "external_id": args.external_id, "metadata": metadata}
        elif len(existing) == 1:
            target = {"person": existing[0]}
        else:
            raise ConfigError(f"{len(existing)} persons are named {args.name!r} (ids {[p.id for p in existing]}); "
                              "use --new or `facelab people rename`")  # fmt: skip
        res = gallery.enroll(
            paths, analyzer, collection=args.collection, review=args.review,
            select="largest" if args.largest else "single", is_live=_liveness(args), **target,
        )  # fmt: skip
    if args.json:
        _print_json(res.to_dict())
    _report_enrolment(res)
    if not res.face_ids:
        print("facelab people add: error: registration failed: no face was accepted", file=sys.stderr)
        return 2
    return EXIT_SOME_FAILED if res.rejected else 0


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--metadata: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--metadata must be a JSON object")
    return value


def _face_brief(f: Any) -> dict[str, Any]:
    return {"id": f.id, "image": None if f.source_path is None else str(f.source_path),
            "bbox": None if f.bbox is None else [float(v) for v in f.bbox], "assigned_by": f.assigned_by}  # fmt: skip


def _cmd_people_list(args: argparse.Namespace) -> int:
    from facelab.cli.cluster_cmd import write_sheets_if_asked

    with _open(args) as gallery:
        people = gallery.persons(args.collection, search=args.search, kind=args.kind)
        # every person's faces: photo and box (people would rather look than read ids), in one read
        faces: dict[int, list[Any]] = {p.id: [] for p in people}
        for face in gallery.store.faces(person_ids=list(faces)) if args.json else []:
            faces[face.person_id].append(face)
        sheets = write_sheets_if_asked(gallery, args)
    if args.json:
        _print_json([{**_person_dict(p), "face_list": [_face_brief(f) for f in faces[p.id]]} for p in people])
        return 0
    for p in people:
        ext = f" [{p.external_id}]" if p.external_id else ""
        print(f"{p.id}\t{p.label()}{ext}\t{p.face_count} face(s)\t{p.kind}")
    if sheets:
        print(f"contact sheets: {len(sheets)} file(s) in {args.sheets}")
    return 0


def _cmd_people_show(args: argparse.Namespace) -> int:
    with _open(args) as gallery:
        person = gallery.find_person(args.person, args.collection)
        faces = gallery.faces(person.id)
    if args.json:
        _print_json({**_person_dict(person), "face_list": [f.to_dict() for f in faces]})
        return 0
    print(
        f"{person.id}\t{person.label()}\t{person.kind}\texternal id: {person.external_id}\tmetadata: {person.metadata}"
    )
    for f in faces:
        box = "" if f.bbox is None else " box=(" + ",".join(str(round(float(v))) for v in f.bbox) + ")"
        quality = "" if f.quality is None else f" quality={f.quality:.2f}"
        print(f"  face {f.id}: {f.source_path}{box}{quality} ({f.source})")
    return 0


def _cmd_people_rename(args: argparse.Namespace) -> int:
    with _open(args) as gallery:
        person = gallery.find_person(args.person, args.collection)
        person = gallery.update_person(person.id, name=args.new_name, kind="named")
    if args.json:
        _print_json(_person_dict(person))
    else:
        print(f"{person.id}\t{person.label()}")
    return 0


def _cmd_people_merge(args: argparse.Namespace) -> int:
    from facelab.gallery.cluster import Correction
    from facelab.gallery.cluster.store import correct_gallery

    with _open(args) as gallery:
        target = gallery.find_person(args.into, args.collection)
        others = [gallery.find_person(o, args.collection).id for o in args.others]
        moved = sum(gallery.person(o).face_count for o in others if o != target.id)
        # a merge is a correction: the faces are pinned to the kept person for every later clustering run
        merges = [Correction("merge", target.id, other=o) for o in others if o != target.id]
        correct_gallery(gallery, args.collection, merges)
        target = gallery.person(target.id)
    if args.json:
        _print_json({**_person_dict(target), "moved_faces": moved})
    else:
        print(f"{moved} face(s) moved to {target.label()} (id {target.id}); {len(others)} person(s) removed")
    return 0


def _cmd_people_delete(args: argparse.Namespace) -> int:
    out = []
    with _open(args) as gallery:
        people = [gallery.find_person(p, args.collection) for p in args.persons]
        for person in people:
            kept = [f.id for f in gallery.faces(person.id)] if args.keep_faces else []
            n = gallery.delete_person(person.id, keep_faces=args.keep_faces)
            if kept:  # kept faces stay out of clustering: the person never comes back
                from facelab.gallery.cluster.store import ignore_faces

                ignore_faces(gallery, args.collection, kept)
            out.append({"id": person.id, "name": person.name, "faces": n})
    if args.json:
        _print_json(out)
    else:
        verb = "unassigned" if args.keep_faces else "deleted"
        for item in out:
            print(f"deleted person {item['id']} ({item['name']}); {item['faces']} face(s) {verb}")
    return 0


# -- facelab gallery -----------------------------------------------------------------------------
def _cmd_gallery_info(args: argparse.Namespace) -> int:
    with _open(args) as gallery:
        info = gallery.info()
        if args.check:
            check = getattr(gallery.store, "integrity_check", None)
            info["integrity"] = check() if check is not None else ["not available for this backend"]
    if args.json:
        _print_json(info)
        return 0
    print(f"{info['url']} ({info['backend']}, schema {info['schema_version']}, search {info['search']['engine']})")
    for key in ("file_bytes", "wal_bytes", "server_version", "pgvector", "hnsw"):
        if key in info:
            print(f"  {key}: {info[key]}")
    for c in info["collections"]:
        model = "no embeddings yet" if c["contract"] is None else f"{c['contract']['model']} ({c['contract']['dim']}-d)"
        print(
            f"  collection {c['name']!r}: {model}; {c['persons']} person(s), {c['faces']} face(s), "
            f"{c['images']} image(s) ({c['image_errors']} error(s)), threshold {c['threshold']}"
        )
    if args.check:
        print(f"  integrity: {', '.join(info['integrity'])}")
    return 0 if not args.check or info["integrity"] == ["ok"] else 2


def _cmd_gallery_export(args: argparse.Namespace) -> int:
    from facelab.gallery.transfer import export_gallery

    with _open(args) as gallery:
        manifest = export_gallery(gallery, args.folder, collections=args.only or None)
    if args.json:
        _print_json(manifest)
    else:
        for c in manifest["collections"]:
            print(f"exported {c['name']!r}: {c['persons']} person(s), {c['faces']} face(s) to {args.folder}")
    return 0


def _cmd_gallery_import(args: argparse.Namespace) -> int:
    from facelab.gallery.transfer import import_gallery

    with _open(args) as gallery:
        done = import_gallery(gallery, args.folder, rename=dict(r.split("=", 1) for r in args.rename or []))
    if args.json:
        _print_json(done)
    else:
        for c in done["collections"]:
            print(f"imported {c['name']!r}: {c['persons']} person(s), {c['faces']} face(s)")
    return 0


def _cmd_gallery_create(args: argparse.Namespace) -> int:
    from facelab.recognition.compare import resolve_threshold

    with _open(args) as gallery:
        coll = gallery.create_collection(
            args.name, threshold=resolve_threshold(args.threshold) if args.threshold is not None else None,
            save_crops=args.save_crops,
        )  # fmt: skip
    print(f"created collection {coll.name!r} (id {coll.id})")
    return 0


def _cmd_gallery_reembed(args: argparse.Namespace) -> int:
    from facelab.gallery.transfer import reembed_collection

    with _open(args) as gallery:
        analyzer = _analyzer(args)
        report = reembed_collection(gallery, args.collection, analyzer, target=args.to, keep_old=args.keep_old)
    if args.json:
        _print_json(report)
    else:
        print(
            f"re-embedded {report['faces']} face(s) of {report['source']!r} into {report['target']!r} with "
            f"{report['model']}; {len(report['lost'])} face(s) not found again"
        )
        for item in report["lost"]:
            print(f"  not re-embedded: face {item['face_id']} ({item['path']}): {item['reason']}", file=sys.stderr)
    return EXIT_SOME_FAILED if report["lost"] else 0


def _enrol_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--review",
        choices=("off", "standard", "strict"),
        default="standard",
        help="quality review: off, standard (the quality policy, default) or strict (also identity)",
    )
    p.add_argument("--largest", action="store_true", help="enrol the largest face of a photo with several faces")
    p.add_argument(
        "--require-live", action="store_true", help="reject faces the liveness models call spoofs (spoof_detected)"
    )
    p.add_argument("--save-crops", action="store_true", help="keep a 112x112 JPEG crop of each face")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``index``, ``search``, ``people`` and ``gallery``."""
    text = "find, embed and store every face of every photo (resumable by content hash)"
    p = subparsers.add_parser("index", help="index photo folders into a gallery (resumable)", description=text)
    p.add_argument("photos", nargs="*", metavar="PHOTOS", help="image files, folders (recursive) or glob patterns")
    _add_gallery_options(p)
    _add_model_options(p)
    _enrol_options(p)
    p.add_argument("--people-from-folders", metavar="DIR", help="enrol one person per top folder of DIR")
    p.add_argument("--prune", action="store_true", help="forget indexed photos under PHOTOS that no longer exist")
    p.add_argument("--retry-errors", action="store_true", help="retry photos that failed before")
    p.add_argument("--batch-images", type=int, default=8, help="images analysed and committed together (default 8)")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: auto (a running cluster, else a new local one), local, or an address",
    )
    p.add_argument("--ray-actors", type=int, default=2, help="Ray actors, each with one analyser (default 2)")
    p.add_argument(
        "--ray-cpus-per-actor", type=float, default=0.5, help="CPUs reserved per actor (default 0.5; keep some free)"
    )
    p.add_argument("--shards", metavar="DIR", help="with --ray: write Parquet shards to DIR, then bulk-load them")
    _add_progress_options(p)
    p.set_defaults(func=_cmd_index)

    p = subparsers.add_parser("search", help="name the people in photos", description="search a gallery by photo")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_gallery_options(p)
    _add_model_options(p)
    p.add_argument("-k", type=int, default=5, help="persons per face (default 5)")
    p.add_argument("--threshold", type=_threshold, default=None, help="cosine threshold or calibration JSON")
    p.add_argument("--photos", type=int, default=0, metavar="N", help="also list the N most similar indexed faces")
    p.add_argument("--require-live", action="store_true", help="do not search faces the liveness models call spoofs")
    p.set_defaults(func=_cmd_search)

    people = subparsers.add_parser("people", help="manage the people of a gallery", description="manage people")
    sub = people.add_subparsers(dest="people_command", metavar="ACTION")
    p = sub.add_parser("add", help="enrol a person from photos (quality policy applies)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("images", nargs="+", metavar="IMAGES")
    _add_gallery_options(p)
    _add_model_options(p)
    _enrol_options(p)
    p.add_argument("--external-id", default=None, help="your own key for this person (unique per collection)")
    p.add_argument("--metadata", default=None, help="JSON object stored with the person")
    p.add_argument("--new", action="store_true", help="always create a new person, even if one has this name")
    p.set_defaults(func=_cmd_people_add)
    p = sub.add_parser("list", help="list persons")
    _add_gallery_options(p)
    p.add_argument("--search", default=None, help="substring of the name or external id")
    p.add_argument("--kind", choices=("named", "cluster"), default=None)
    p.add_argument("--sheets", default=None, metavar="DIR", help="write a contact sheet per person and overview.png")
    p.set_defaults(func=_cmd_people_list)
    for name, func, text in (("show", _cmd_people_show, "show a person and their faces"),):
        p = sub.add_parser(name, help=text)
        p.add_argument("person", metavar="PERSON", help="id, external id or name")
        _add_gallery_options(p)
        p.set_defaults(func=func)
    p = sub.add_parser("rename", help="rename a person")
    p.add_argument("person", metavar="PERSON")
    p.add_argument("new_name", metavar="NEW_NAME")
    _add_gallery_options(p)
    p.set_defaults(func=_cmd_people_rename)
    p = sub.add_parser("merge", help="move the faces of OTHERS to INTO and delete OTHERS")
    p.add_argument("into", metavar="INTO")
    p.add_argument("others", nargs="+", metavar="OTHERS")
    _add_gallery_options(p)
    p.set_defaults(func=_cmd_people_merge)
    p = sub.add_parser("delete", help="delete persons with their faces, embeddings and crops")
    p.add_argument("persons", nargs="+", metavar="PERSON")
    _add_gallery_options(p)
    p.add_argument("--keep-faces", action="store_true", help="keep their faces, unassigned (photo libraries)")
    p.set_defaults(func=_cmd_people_delete)
    from facelab.cli.cluster_cmd import register_people_actions

    register_people_actions(sub, _add_gallery_options)  # split, move, reject (corrections for clustering)
    people.set_defaults(func=lambda args: _missing_action(people))

    gal = subparsers.add_parser("gallery", help="gallery maintenance", description="gallery maintenance")
    sub = gal.add_subparsers(dest="gallery_command", metavar="ACTION")
    p = sub.add_parser("info", help="backend, collections, models and counts")
    _add_gallery_options(p)
    p.add_argument("--check", action="store_true", help="also run the database's integrity check")
    p.set_defaults(func=_cmd_gallery_info)
    p = sub.add_parser("create", help="create a collection")
    p.add_argument("name", metavar="NAME")
    _add_gallery_options(p, json_flag=False)
    p.add_argument("--threshold", type=_threshold, default=None, help="cosine threshold or calibration JSON")
    p.add_argument("--save-crops", action="store_true", help="keep face crops")
    p.set_defaults(func=_cmd_gallery_create)
    p = sub.add_parser("export", help="write collections as Parquet files with a manifest")
    p.add_argument("folder", metavar="DIR")
    _add_gallery_options(p)
    p.add_argument("--only", action="append", metavar="COLLECTION", help="export only this collection (repeatable)")
    p.set_defaults(func=_cmd_gallery_export)
    p = sub.add_parser("import", help="read an export into this gallery")
    p.add_argument("folder", metavar="DIR")
    _add_gallery_options(p)
    p.add_argument("--rename", action="append", metavar="OLD=NEW", help="import collection OLD as NEW")
    p.set_defaults(func=_cmd_gallery_import)
    p = sub.add_parser("reembed", help="migrate a collection to another model pack (re-detects its source photos)")
    _add_gallery_options(p)
    _add_model_options(p)
    p.add_argument("--to", default=None, help="name of the new collection (default: replace the old one)")
    p.add_argument("--keep-old", action="store_true", help="keep the old collection (as NAME@old without --to)")
    p.set_defaults(func=_cmd_gallery_reembed)
    gal.set_defaults(func=lambda args: _missing_action(gal))


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
