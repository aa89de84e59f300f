"""Indexing on a real local Ray cluster (2 CPUs, two actors of 0.5 CPU) gives exactly the single-process result.

Once streamed into SQLite through ``facelab index --ray``, once through Parquet shards bulk-loaded
into PostgreSQL; both compared with ``Gallery.index_photos`` in this process.
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import json
import os

import pytest

from cli_helpers import run_main
from facelab.gallery import Gallery
from gallery_fixtures import analyzer, copy_photos, gallery_home, gallery_url, small_photos  # noqa: F401
from shared_data import require_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster(gallery_home):
    ray = require_module("ray")
    require_module("pyarrow")
    os.environ["FACELAB_HOME"] = str(gallery_home)  # the workers inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _faces(g: Gallery) -> list[tuple]:
    arrays = g.face_arrays()
    images = {i.id: i for i in g.store.images(g.collection().id)}
    records = {f.id: f for f in g.store.faces(face_ids=arrays.ids.tolist())}
    out = []
    for fid, emb, iid in zip(arrays.ids, arrays.embeddings, arrays.image_ids):
        f = records[int(fid)]
        out.append((images[int(iid)].path.name, images[int(iid)].sha256, f.bbox.tobytes(), f.det_score, f.quality,
                    emb.tobytes()))  # fmt: skip
    return out


def test_ray_index_equals_single_process(ray_cluster, tmp_path, small_photos, analyzer, capsys, monkeypatch):
    library = tmp_path / "photos"
    copy_photos(small_photos, ["A1", "B13", "couple", "noface"], library)
    (library / "broken.jpg").write_bytes(b"not a photo")
    with Gallery.open(tmp_path / "single.db") as g:
        single = g.index_photos([library], analyzer, batch_images=2)
        expected = _faces(g)
        expected_images = sorted((i.path.name, i.status, i.face_count) for i in g.store.images(g.collection().id))
    assert single.faces_added == 4 and single.errors == 1

    db = tmp_path / "ray.db"
    argv = ["index", library, "--gallery", db, "--offline", "--ray", "auto", "--ray-actors", "2",
            "--ray-cpus-per-actor", "0.5", "--batch-images", "2", "--json"]  # fmt: skip
    code, out, err = run_main(argv, capsys)
    assert code == 3, err  # broken.jpg is reported
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["indexed"], report["faces_added"], report["errors"]) == (4, 4, 1)
    with Gallery.open(db) as g:
        assert _faces(g) == expected
        assert (
            sorted((i.path.name, i.status, i.face_count) for i in g.store.images(g.collection().id)) == expected_images
        )
    code, out, _ = run_main(argv, capsys)  # resumable like the single-process run
    assert json.loads(out.strip().splitlines()[-1])["unchanged"] == 5

    from facelab.gallery.ray_index import index_photos_ray

    with Gallery.open(gallery_url("postgresql", tmp_path)) as g:
        report = index_photos_ray(
            g, [library], {"download": False}, address=None, actors=2, cpus_per_actor=0.5, batch_images=2,
            shards=tmp_path / "shards",
        )  # fmt: skip
        assert list((tmp_path / "shards").glob("*.parquet"))
        assert (report.indexed, report.faces_added, report.errors) == (4, 4, 1)
        assert _faces(g) == expected
        arrays = g.face_arrays()
        hit = g.search_faces(arrays.embeddings[3], k=1, exact=True)[0][0]
        assert hit.face_id == arrays.ids[3] and hit.score == pytest.approx(1.0, abs=1e-5)
