"""``/v1/index`` jobs: index a library root in the background, progress, path confinement."""

from __future__ import annotations

import time

import pytest

from cli_helpers import link_or_copy
from shared_data import missing_dependency, shared_file

try:
    import fastapi  # noqa: F401  (the 'serve' extra; serve_helpers.serve_client uses its TestClient)
except ImportError:  # pragma: no cover
    missing_dependency("the service tests need the 'serve' extra (fastapi)")

from facelab.serve import ServeSettings
from serve_helpers import serve_client


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facelab import FaceAnalyzer

    lib = tmp_path_factory.mktemp("library")
    for name in ("img1.jpg", "img2.jpg", "couple.jpg"):
        link_or_copy(shared_file(f"data/verification/deepface/{name}"), lib / "2024" / name)
    link_or_copy(shared_file("data/images/t1.jpg"), lib / "t1.jpg")
    (lib / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    data = tmp_path_factory.mktemp("serve-jobs")
    with serve_client(ServeSettings(data_dir=data, library=(lib,)), FaceAnalyzer()) as client:
        yield client


def _wait(api, job_id: str) -> dict:
    for _ in range(1200):
        job = api.get(f"/v1/index/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(job)


def test_index_job_runs_and_reports_progress(api):
    assert api.get("/v1/library").json() == {
        "roots": [{"root": 0, "name": api.app.state.facelab.settings.library[0].name}]
    }
    assert api.post("/v1/collections", json={"id": "photos", "save_face_crops": True}).status_code == 201
    started = api.post("/v1/index", json={"collection_id": "photos", "root": 0, "paths": ["2024"]})
    assert started.status_code == 202, started.text
    job = _wait(api, started.json()["id"])
    assert job["status"] == "done", job
    assert job["progress"]["done"] == job["progress"]["total"] == 4
    assert job["report"]["indexed"] == 3 and job["report"]["errors"] == 1
    assert job["report"]["failures"][0]["file"] == "broken.jpg"
    faces = api.get("/v1/collections/photos").json()["counts"]["faces"]
    assert faces >= 4  # img1, img2 and the couple
    again = _wait(api, api.post("/v1/index", json={"collection_id": "photos", "paths": ["."]}).json()["id"])
    # the three photos and the broken file (its error is kept, not retried) are unchanged; t1.jpg is new
    assert again["report"]["unchanged"] == 4 and again["report"]["indexed"] == 1
    assert api.get("/v1/collections/photos").json()["counts"]["faces"] == faces + 6
    assert api.get("/v1/index").json()["jobs"][0]["id"] == again["id"]


@pytest.mark.parametrize("path", ["..", "../..", "/etc", "2024/../../..", "nothing-here", "a\x00b"])
def test_paths_outside_the_root_are_refused(api, path):
    api.post("/v1/collections", json={"id": "photos2"})
    r = api.post("/v1/index", json={"collection_id": "photos2", "paths": [path]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"


def test_unknown_job_and_bad_root(api):
    assert api.get("/v1/index/0123456789abcdef").json()["error"]["code"] == "job_not_found"
    api.post("/v1/collections", json={"id": "photos3"})
    assert api.post("/v1/index", json={"collection_id": "photos3", "root": 5}).status_code == 422
