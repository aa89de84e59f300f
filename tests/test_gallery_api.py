"""``import facelab.gallery`` and a SQLite gallery load no PostgreSQL driver, Ray or pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys

_HEAVY = ("psycopg", "pgvector", "ray", "pyarrow", "pandas", "torch", "onnxruntime")


def test_gallery_imports_stay_light(tmp_path):
    code = (
        "import sys, json\n"
        f"heavy = {_HEAVY!r}\n"
        "import facelab, facelab.gallery\n"
        "from facelab.gallery import Gallery, open_gallery, index_photos_ray, export_gallery\n"
        "import facelab.cli\n"
        "facelab.cli.build_parser()\n"
        f"g = open_gallery({str(tmp_path / 'g.db')!r}); g.add_person('x'); g.search_embeddings\n"
        "g.close()\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_backends_are_registered_by_scheme():
    import facelab.gallery._postgres
    import facelab.gallery._sqlite
    from facelab.gallery.store import STORE_BACKENDS, parse_url

    assert STORE_BACKENDS.get("sqlite") is facelab.gallery._sqlite.SQLiteStore
    assert STORE_BACKENDS.get("postgresql") is STORE_BACKENDS.get("postgres") is facelab.gallery._postgres.PostgresStore
    assert parse_url("sqlite:////abs/g.db") == ("sqlite", "/abs/g.db", {})
    assert parse_url("sqlite:///rel/g.db?timeout=5") == ("sqlite", "rel/g.db", {"timeout": "5"})
    assert parse_url("postgresql://u@h/db?schema=s")[2] == {"schema": "s"}
