"""``facelab cluster`` and the corrections ``facelab people split|move|reject``.

Thin commands over :mod:`facelab.gallery.cluster.store`: the engine does the clustering, the
gallery keeps the result and the user's corrections (see that module for how they are stored).
The ``people`` actions are registered into ``facelab people`` by :mod:`facelab.cli.gallery_cmd`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from facelab.errors import ConfigError

__all__ = ["register", "register_people_actions", "write_sheets_if_asked"]


def _params(items: list[str] | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value.strip()
    return out or None


def write_sheets_if_asked(gallery: Any, args: argparse.Namespace) -> list[str]:
    """Write contact sheets to ``args.sheets`` when given; returns the files."""
    if not getattr(args, "sheets", None):
        return []
    from facelab.gallery.cluster.sheets import write_sheets

    return [str(p) for p in write_sheets(gallery, args.collection, args.sheets)]


def _cmd_cluster(args: argparse.Namespace) -> int:
    from facelab.cli.gallery_cmd import _open, _print_json
    from facelab.gallery.cluster.store import cluster_gallery

    with _open(args) as gallery:
        done = cluster_gallery(
            gallery,
            args.collection,
            algorithm=args.algorithm,
            threshold=args.threshold,
            params=_params(args.param),
            full=args.full,
        )
        sheets = write_sheets_if_asked(gallery, args)
        people = gallery.persons(args.collection)
    summary = done.to_dict() | {"people": len(people), "sheets": sheets}
    if args.json:
        _print_json(summary)
        return 0
    r = done.result
    print(
        f"{done.mode} run ({r.info['params']['algorithm']}): {summary['faces']} face(s), {summary['assigned']} in a "
        f"person; {len(done.new_persons)} new, {len(done.deleted_persons)} removed, {summary['people']} people now"
    )
    if sheets:
        print(f"contact sheets: {len(sheets)} file(s) in {args.sheets}")
    return 0


def _faces(values: list[str]) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError as exc:
        raise ConfigError(f"face ids are integers ('facelab people show PERSON' lists them): {exc}") from None


def _cmd_split(args: argparse.Namespace) -> int:
    from facelab.cli.gallery_cmd import _open, _print_json
    from facelab.gallery.cluster import Correction
    from facelab.gallery.cluster.store import correct_gallery

    with _open(args) as gallery:
        person = gallery.find_person(args.person, args.collection)
        before = {p.id for p in gallery.persons(args.collection)}
        correct_gallery(gallery, args.collection, [Correction("split", person.id, _faces(args.faces), other=-1)])
        new = sorted({p.id for p in gallery.persons(args.collection)} - before)
        if args.name and new:
            gallery.update_person(new[0], name=args.name, kind="named")
    if args.json:
        _print_json({"person": person.id, "new_person": new[0] if new else None, "faces": list(_faces(args.faces))})
    else:
        print(f"{len(args.faces)} face(s) split off person {person.id} into person {new[0] if new else '?'}")
    return 0


def _correct_faces(args: argparse.Namespace, action: str, person_ref: str) -> int:
    """Apply the ``action`` correction (``move`` / ``reject``) of ``args.faces`` to a person; its id."""
    from facelab.cli.gallery_cmd import _open
    from facelab.gallery.cluster import Correction
    from facelab.gallery.cluster.store import correct_gallery

    with _open(args) as gallery:
        person = gallery.find_person(person_ref, args.collection)
        correct_gallery(gallery, args.collection, [Correction(action, person.id, _faces(args.faces))])
    return person.id


def _cmd_move(args: argparse.Namespace) -> int:
    from facelab.cli.gallery_cmd import _print_json

    pid = _correct_faces(args, "move", args.to)
    if args.json:
        _print_json({"person": pid, "faces": list(_faces(args.faces))})
    else:
        print(f"{len(args.faces)} face(s) moved to person {pid}")
    return 0


def _cmd_reject(args: argparse.Namespace) -> int:
    from facelab.cli.gallery_cmd import _print_json

    pid = _correct_faces(args, "reject", args.person)
    if args.json:
        _print_json({"person": pid, "rejected_faces": list(_faces(args.faces))})
    else:
        print(f"{len(args.faces)} face(s) are not person {pid}; no later run puts them back")
    return 0


def register_people_actions(sub: Any, add_gallery_options: Any) -> None:
    """Add ``split``, ``move`` and ``reject`` to the ``facelab people`` sub-parsers."""
    p = sub.add_parser("split", help="move FACES off PERSON into a new person (kept apart in every run)")
    p.add_argument("person", metavar="PERSON", help="id, external id or name")
    p.add_argument("faces", nargs="+", metavar="FACE_ID")
    p.add_argument("--name", default=None, help="name the new person")
    add_gallery_options(p)
    p.set_defaults(func=_cmd_split)
    p = sub.add_parser("move", help="put FACES into person TO (kept there in every run)")
    p.add_argument("faces", nargs="+", metavar="FACE_ID")
    p.add_argument("--to", required=True, metavar="PERSON", help="id, external id or name")
    add_gallery_options(p)
    p.set_defaults(func=_cmd_move)
    p = sub.add_parser("reject", help="FACES are not PERSON (no later run puts them back)")
    p.add_argument("person", metavar="PERSON", help="id, external id or name")
    p.add_argument("faces", nargs="+", metavar="FACE_ID")
    add_gallery_options(p)
    p.set_defaults(func=_cmd_reject)


def register(subparsers: Any) -> None:
    """Add ``facelab cluster``."""
    from facelab.cli.gallery_cmd import _add_gallery_options

    p = subparsers.add_parser(
        "cluster",
        help="group a gallery's faces into people (keeps named people and your corrections)",
        description="Group the faces of a gallery into people. By default only the faces indexed since the "
        "last run join people or found new ones; --full re-clusters everything (named people, your merges, "
        "splits, moves and rejects are kept).",
    )
    _add_gallery_options(p)
    p.add_argument("--algorithm", default="default", help="immich, dbscan, hdbscan, agglomerative, chinese_whispers")
    p.add_argument("--param", action="append", help="algorithm parameter NAME=VALUE (repeatable)")
    p.add_argument("--threshold", type=float, default=None, help="same-person cosine threshold (default: the pack's)")
    p.add_argument("--full", action="store_true", help="re-cluster every face")
    p.add_argument("--sheets", default=None, metavar="DIR", help="write a contact sheet per person and overview.png")
    p.set_defaults(func=_cmd_cluster)
