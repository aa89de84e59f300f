"""``facelab serve``: run the REST service and web app; ``facelab serve keys``: manage API keys."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from facelab.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` (with its ``keys`` sub-commands)."""
    p = subparsers.add_parser(
        "serve",
        help="run the face service and web app",
        description="Run the REST service and web app on a gallery (needs the 'serve' extra). Every setting can "
        "also come from FACELAB_SERVE_<NAME> environment variables.",
    )
    p.add_argument("--gallery", help="gallery URL: sqlite:///path.db (default under --data-dir) or postgresql://...")
    p.add_argument("--pack", help="model pack (default: the open pack)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, help="inference worker threads (default: the number of cores, up to 8)")
    p.add_argument("--queue", type=int, help="requests allowed to wait for a worker before 503 (default 16)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model call (default 1)")
    p.add_argument("--data-dir", type=Path, help="folder of keys.json and the cursor key (default $FACELAB_HOME/serve)")
    p.add_argument("--no-auth", action="store_true", help="turn API keys off (only on a trusted network)")
    p.add_argument("--cors-origin", action="append", dest="cors_origins", help="allow this browser origin (repeat)")
    p.add_argument("--swap-model", type=Path, help="inswapper_128-style model for /v1/swap")
    p.add_argument(
        "--library", action="append", type=Path, help="a photo-library folder that index jobs may index (repeat)"
    )
    p.add_argument("--liveness", action="store_true", help="load the liveness models (/v1/liveness, face.liveness)")
    p.add_argument(
        "--require-live", action="store_true", help="refuse spoofs in enrollment (spoof_detected) and search"
    )
    p.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON objects")
    p.set_defaults(func=_serve)
    sub = p.add_subparsers(dest="serve_command", metavar="keys")
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=("read", "write", "admin"), default="read")
    create.add_argument("--data-dir", type=Path, dest="keys_dir")
    create.set_defaults(func=_keys_create)
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--data-dir", type=Path, dest="keys_dir")
    listing.set_defaults(func=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.add_argument("--data-dir", type=Path, dest="keys_dir")
    revoke.set_defaults(func=_keys_revoke)


def _store(args: argparse.Namespace):  # noqa: ANN202 - KeyStore, imported lazily
    from facelab.serve.auth import KeyStore
    from facelab.serve.settings import ServeSettings

    folder = args.keys_dir or ServeSettings.from_env().data_dir
    return KeyStore(folder)


def _keys_create(args: argparse.Namespace) -> int:
    secret, record = _store(args).create(args.name, args.scope)
    print(secret)
    print(f"key {record.key_id} ({record.scope}) created; the secret above is shown only once", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    keys = _store(args).list()
    if args.json:
        print(json.dumps([k.public() for k in keys], indent=1))
        return 0
    for k in keys:
        state = "active" if k.active else f"revoked {time.strftime('%Y-%m-%d %H:%M', time.gmtime(k.revoked_at))}"
        print(f"{k.key_id}  {k.scope:<5}  {state:<24}  {k.name}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    record = _store(args).revoke(args.key_id)
    print(f"key {record.key_id} revoked")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from facelab.serve import ServeSettings, create_app
        from facelab.serve.middleware import JsonLogFormatter
    except ImportError as exc:
        raise ConfigError(f"facelab serve needs the 'serve' extra: pip install 'facelab[serve]' ({exc})") from exc
    settings = ServeSettings.from_env(
        gallery=args.gallery,
        pack=args.pack,
        workers=args.workers,
        queue=args.queue,
        threads=args.threads,
        data_dir=args.data_dir,
        auth=False if args.no_auth else None,
        cors_origins=tuple(args.cors_origins) if args.cors_origins else None,
        swap_model=args.swap_model,
        library=tuple(args.library) if args.library else None,
        liveness=True if args.liveness else None,
        require_live=True if args.require_live else None,
        log_format=args.log_format,
    )
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False)
    return 0
