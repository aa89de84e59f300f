"""Gallery routes in process: collections, enrollment under the quality policy, 1:N search, cursors, erasure."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import missing_dependency, shared_file

try:
    import fastapi  # noqa: F401  (the 'serve' extra; serve_helpers.serve_client uses its TestClient)
except ImportError:  # pragma: no cover
    missing_dependency("the service tests need the 'serve' extra (fastapi)")

from facelab.serve import ServeSettings
from serve_helpers import serve_client

DF = "data/verification/deepface/"
ANGELINA = ["img1.jpg", "img2.jpg", "img4.jpg"]  # master.csv: all "Yes" with img1
OTHERS = ["img17.jpg", "img3.jpg"]  # master.csv: "No" with img1


def _img(name: str) -> tuple[str, bytes, str]:
    return (name, Path(shared_file(DF + name)).read_bytes(), "image/jpeg")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facelab import FaceAnalyzer

    data = tmp_path_factory.mktemp("serve-gallery")
    with serve_client(ServeSettings(data_dir=data, max_enroll_images=3), FaceAnalyzer()) as client:
        yield client


def _code(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text


def test_enroll_search_and_erase(api):
    r = api.post("/v1/collections", json={"id": "staff", "save_face_crops": True})
    assert r.status_code == 201, r.text
    assert r.json()["embedding_contract_id"] is None
    _code(api.post("/v1/collections", json={"id": "staff"}), 409, "collection_exists")
    enrolled = api.post(
        "/v1/collections/staff/persons",
        files=[("images", _img(ANGELINA[0])), ("images", _img(ANGELINA[1]))],
        data={"name": "Angelina", "external_id": "emp-1", "metadata": '{"team": "films"}'},
    )
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert body["accepted"] == ANGELINA[:2] and body["rejected"] == []
    person = body["person"]
    assert person["name"] == "Angelina" and person["face_count"] == 2 and person["metadata"] == {"team": "films"}
    pid = person["id"]
    assert api.get("/v1/collections/staff").json()["embedding_contract_id"].startswith("facelab-emb-v1-sha256:")
    other = api.post("/v1/collections/staff/persons", files=[("images", _img(OTHERS[0]))], data={"name": "Other"})
    assert other.status_code == 201, other.text

    hit = api.post("/v1/collections/staff/search", files={"image": _img(ANGELINA[2])})
    assert hit.status_code == 200, hit.text
    faces = hit.json()["faces"]
    assert len(faces) == 1 and faces[0]["identity"]["person_id"] == pid and faces[0]["identity"]["matched"] is True
    assert faces[0]["matches"][0]["score"] >= hit.json()["threshold"]
    miss = api.post("/v1/collections/staff/search", files={"image": _img(OTHERS[1])})
    assert miss.json()["faces"][0]["identity"] is None

    listed = api.get(f"/v1/collections/staff/persons/{pid}/faces").json()["faces"]
    assert len(listed) == 2 and all(f["has_crop"] for f in listed) and "embedding" not in listed[0]
    crop = api.get(f"/v1/collections/staff/persons/{pid}/faces/{listed[0]['id']}/image")
    assert (
        crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg" and crop.content[:3] == b"\xff\xd8\xff"
    )
    assert crop.headers["cache-control"] == "no-store"

    assert api.delete(f"/v1/collections/staff/persons/{pid}").status_code == 204
    _code(api.get(f"/v1/collections/staff/persons/{pid}"), 404, "person_not_found")
    after = api.post("/v1/collections/staff/search", files={"image": _img(ANGELINA[2])})
    assert all(m["person_id"] != pid for m in after.json()["faces"][0]["matches"])
    _code(api.get(f"/v1/collections/staff/persons/{pid}/faces/{listed[0]['id']}/image"), 404, "person_not_found")


def test_rejections_partial_success_and_limits(api):
    api.post("/v1/collections", json={"id": "rej"})
    view = ("view.jpg", Path(shared_file("data/images/inspireface/bulk/view.jpg")).read_bytes(), "image/jpeg")
    partial = api.post(
        "/v1/collections/rej/persons", files=[("images", _img("img1.jpg")), ("images", view)], data={"name": "A"}
    )
    assert partial.status_code == 201, partial.text
    assert partial.json()["rejected"] == [
        {"image": "view.jpg", "reasons": ["face_not_found"], "detail": partial.json()["rejected"][0]["detail"]}
    ]
    failed = api.post("/v1/collections/rej/persons", files=[("images", view)], data={"name": "B"})
    _code(failed, 422, "registration_failed")
    assert failed.json()["error"]["details"]["rejected"][0]["reasons"] == ["face_not_found"]
    assert [p["name"] for p in api.get("/v1/collections/rej/persons").json()["persons"]] == ["A"]
    four = [("images", _img("img1.jpg"))] * 4
    _code(api.post("/v1/collections/rej/persons", files=four, data={"name": "C"}), 413, "too_many_images")
    dup = api.post(
        "/v1/collections/rej/persons", files=[("images", _img("img2.jpg"))], data={"name": "D", "external_id": "x"}
    )
    assert dup.status_code == 201
    again = api.post(
        "/v1/collections/rej/persons", files=[("images", _img("img5.jpg"))], data={"name": "E", "external_id": "x"}
    )
    _code(again, 409, "conflict")
    _code(
        api.post("/v1/collections/nope/persons", files=[("images", _img("img1.jpg"))], data={"name": "F"}),
        404,
        "collection_not_found",
    )


def test_pagination_cursors_are_signed(api):
    api.post("/v1/collections", json={"id": "pages"})
    for i in range(3):
        r = api.post("/v1/collections/pages/persons", files=[("images", _img(ANGELINA[i]))], data={"name": f"p{i}"})
        assert r.status_code == 201, r.text
    first = api.get("/v1/collections/pages/persons", params={"limit": 2}).json()
    assert [p["name"] for p in first["persons"]] == ["p0", "p1"] and first["next_cursor"]
    second = api.get("/v1/collections/pages/persons", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["name"] for p in second["persons"]] == ["p2"] and second["next_cursor"] is None
    forged = first["next_cursor"][:-3] + ("AAA" if not first["next_cursor"].endswith("AAA") else "BBB")
    _code(api.get("/v1/collections/pages/persons", params={"cursor": forged}), 400, "invalid_cursor")
    other_list = api.get("/v1/collections", params={"cursor": first["next_cursor"]})
    _code(other_list, 400, "invalid_cursor")


@pytest.mark.parametrize(
    "name",
    ['O\'Brien "Bob"; DROP TABLE persons;--', "名前 😀 <script>alert(1)</script>", "x" * 200, "../../etc/passwd"],
)
def test_hostile_names_round_trip(api, name):
    api.post("/v1/collections", json={"id": "hostile"})
    r = api.post(
        "/v1/collections/hostile/persons",
        files=[("images", _img("img1.jpg"))],
        data={"name": name, "metadata": '{"note": "\\u0000 nul and \'quotes\'"}'},
    )
    assert r.status_code == 201, r.text
    pid = r.json()["person"]["id"]
    got = api.get(f"/v1/collections/hostile/persons/{pid}").json()
    assert got["name"] == name and got["metadata"] == {"note": "\u0000 nul and 'quotes'"}
    patched = api.patch(f"/v1/collections/hostile/persons/{pid}", json={"name": name[::-1]})
    assert patched.json()["name"] == name[::-1]


@pytest.mark.parametrize("bad", ["../x", "a b", "x" * 65, "%2e%2e", "col;drop"])
def test_hostile_ids_are_refused(api, bad):
    assert api.post("/v1/collections", json={"id": bad}).status_code == 422
    r = api.get(f"/v1/collections/{bad}")
    assert r.status_code == 404, r.text
    assert api.get("/v1/collections/staff/persons/1%20OR%201=1").status_code == 422
