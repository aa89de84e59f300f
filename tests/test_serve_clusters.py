"""``/v1/collections/{id}/clusters``: group an indexed library into people, corrections that stick."""

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

pytestmark = pytest.mark.slow

# master.csv: img1, img2, img4, img5, img6 are one person (Angelina); img17 and img3 are others.
ANGELINA = ["img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img6.jpg"]
OTHERS = ["img17.jpg", "img3.jpg"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facelab import FaceAnalyzer

    lib = tmp_path_factory.mktemp("albums")
    for name in ANGELINA + OTHERS:
        link_or_copy(shared_file(f"data/verification/deepface/{name}"), lib / name)
    with serve_client(
        ServeSettings(data_dir=tmp_path_factory.mktemp("serve-clu"), library=(lib,)), FaceAnalyzer()
    ) as client:
        assert client.post("/v1/collections", json={"id": "lib", "save_face_crops": True}).status_code == 201
        job = client.post("/v1/index", json={"collection_id": "lib", "paths": ["."]}).json()
        for _ in range(1200):
            if client.get(f"/v1/index/{job['id']}").json()["status"] == "done":
                break
            time.sleep(0.1)
        yield client


def _people(api) -> list[dict]:
    return api.get("/v1/collections/lib/clusters").json()["people"]


def test_cluster_name_and_corrections_survive_a_full_rerun(api):
    run = api.post("/v1/collections/lib/clusters", json={})
    assert run.status_code == 200, run.text
    assert run.json()["mode"] == "full" and run.json()["faces"] == 7
    assert run.json()["algorithm"] == "chinese_whispers"  # the measured default, named in the answer
    people = _people(api)
    biggest = people[0]
    assert biggest["kind"] == "cluster" and biggest["face_count"] == 5 and all(f["has_crop"] for f in biggest["faces"])
    pid = biggest["id"]
    named = api.patch(f"/v1/collections/lib/persons/{pid}", json={"name": "Angelina"})
    assert named.status_code == 200 and named.json()["name"] == "Angelina"
    face = biggest["faces"][-1]["id"]
    rejected = api.post("/v1/collections/lib/clusters/reject", json={"person_id": pid, "face_id": face})
    assert rejected.status_code == 200, rejected.text
    rerun = api.post("/v1/collections/lib/clusters", json={"full": True})
    assert rerun.status_code == 200, rerun.text
    after = {p["id"]: p for p in _people(api)}
    assert after[pid]["name"] == "Angelina" and after[pid]["face_count"] == 4
    assert face not in {f["id"] for f in after[pid]["faces"]}
    # move it back: the user changes their mind
    moved = api.post("/v1/collections/lib/clusters/move", json={"person_id": pid, "face_ids": [face]})
    assert moved.status_code == 200, moved.text
    api.post("/v1/collections/lib/clusters", json={"full": True})
    assert {p["id"]: p for p in _people(api)}[pid]["face_count"] == 5


def test_corrections_are_checked(api):
    people = _people(api)
    pid = people[0]["id"]
    assert api.post("/v1/collections/lib/clusters/merge", json={"into": pid, "others": [pid]}).status_code == 422
    assert (
        api.post("/v1/collections/lib/clusters/move", json={"person_id": pid, "face_ids": [999999]}).status_code == 404
    )
    assert (
        api.post("/v1/collections/lib/clusters/split", json={"person_id": 999999, "face_ids": [1]}).status_code == 404
    )
    assert api.post("/v1/collections/lib/clusters", json={"algorithm": "nope"}).status_code == 422
