"""``facelab.gallery``: people and faces that persist, 1:N search, photo-library indexing.

Open a gallery by URL — ``sqlite:///path.db`` (default: one file, no server) or
``postgresql://...`` (PostgreSQL + pgvector, extra ``postgres``) — then enrol people, index
photo folders and search::

    from facelab import FaceAnalyzer
    from facelab.gallery import Gallery

    fa = FaceAnalyzer()
    with Gallery.open("sqlite:///people.db") as g:
        g.enroll(["alice1.jpg", "alice2.jpg"], fa, name="Alice")   # quality policy applies
        g.index_photos(["~/Pictures"], fa)                          # resumable by content hash
        for hit in g.search_image("party.jpg", fa):
            print(hit.face.bbox, hit.best.label() if hit.best else "unknown")

Layout: :mod:`~facelab.gallery.records` (data model), :mod:`~facelab.gallery.store` (backend
interface and registry; ``_sqlite``, ``_postgres``), :mod:`~facelab.gallery.gallery` (the
:class:`Gallery` with its in-memory index), :mod:`~facelab.gallery.search` (search kernels),
:mod:`~facelab.gallery.enroll`, :mod:`~facelab.gallery.indexing`, :mod:`~facelab.gallery.transfer`
(Parquet export/import, re-embedding) and :mod:`~facelab.gallery.ray_index` (Ray Data).
Names are imported lazily: ``import facelab.gallery`` loads no database driver, Ray or pyarrow.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Gallery": "facelab.gallery.gallery",
    "FaceSearch": "facelab.gallery.gallery",
    "PersonMatch": "facelab.gallery.gallery",
    "FaceMatch": "facelab.gallery.gallery",
    "DEFAULT_COLLECTION": "facelab.gallery.gallery",
    "Collection": "facelab.gallery.records",
    "Person": "facelab.gallery.records",
    "FaceRecord": "facelab.gallery.records",
    "ImageRecord": "facelab.gallery.records",
    "FaceArrays": "facelab.gallery.records",
    "EmbeddingContract": "facelab.gallery.records",
    "contract_of": "facelab.gallery.contract",
    "open_store": "facelab.gallery.store",
    "STORE_BACKENDS": "facelab.gallery.store",
    "GalleryStore": "facelab.gallery.store",
    "enroll": "facelab.gallery.enroll",
    "enroll_folders": "facelab.gallery.enroll",
    "EnrollmentResult": "facelab.gallery.enroll",
    "Rejection": "facelab.gallery.enroll",
    "REJECTION_REASONS": "facelab.gallery.enroll",
    "index_photos": "facelab.gallery.indexing",
    "IndexReport": "facelab.gallery.indexing",
    "export_gallery": "facelab.gallery.transfer",
    "import_gallery": "facelab.gallery.transfer",
    "reembed_collection": "facelab.gallery.transfer",
    "index_photos_ray": "facelab.gallery.ray_index",
}


def open_gallery(url: str, **options: Any) -> Any:
    """Open (creating when needed) the gallery at ``url``: same as ``Gallery.open(url, **options)``."""
    from facelab.gallery.gallery import Gallery

    return Gallery.open(url, **options)


__all__ = sorted([*_LAZY, "open_gallery"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facelab.gallery' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
