"""``/v1/liveness`` and the service's ``--require-live`` gate (real models, in process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveness_helpers import LIVE, SPOOFS, install_liveness_pack
from shared_data import missing_dependency, shared_file

try:
    import fastapi  # noqa: F401  (the 'serve' extra; serve_helpers.serve_client uses its TestClient)
except ImportError:  # pragma: no cover
    missing_dependency("the service tests need the 'serve' extra (fastapi)")

from facelab.serve import ServeSettings
from serve_helpers import serve_client


def _img(rel: str) -> tuple[str, bytes, str]:
    return (Path(rel).name, Path(shared_file(rel)).read_bytes(), "image/jpeg")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facelab import FaceAnalyzer

    home = tmp_path_factory.mktemp("serve-live-home")
    install_liveness_pack(home)
    fa = FaceAnalyzer(modules=["all", "liveness"], home=home, download=False)
    with serve_client(ServeSettings(data_dir=tmp_path_factory.mktemp("serve-live"), require_live=True), fa) as client:
        yield client


def test_liveness_route_scores_the_samples(api):
    live = api.post("/v1/liveness", files={"image": _img(LIVE)})
    assert live.status_code == 200, live.text
    assert [f["liveness"]["is_live"] for f in live.json()["faces"]] == [True]
    for rel in SPOOFS:
        spoof = api.post("/v1/liveness", files={"image": _img(rel)}).json()
        assert spoof["faces"] and not any(f["liveness"]["is_live"] for f in spoof["faces"])
        assert 0 <= spoof["faces"][0]["liveness"]["score"] < 0.5


def test_enrollment_and_search_refuse_spoofs(api):
    assert api.post("/v1/collections", json={"id": "door"}).status_code == 201
    refused = api.post("/v1/collections/door/persons", files=[("images", _img(SPOOFS[0]))], data={"name": "print"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "registration_failed"
    assert refused.json()["error"]["details"]["rejected"][0]["reasons"] == ["spoof_detected"]
    ok = api.post("/v1/collections/door/persons", files=[("images", _img(LIVE))], data={"name": "live"})
    assert ok.status_code == 201, ok.text
    hit = api.post("/v1/collections/door/search", files={"image": _img(LIVE)}).json()["faces"]
    assert hit[0]["identity"]["name"] == "live" and hit[0]["rejected"] is None
    gated = api.post("/v1/collections/door/search", files={"image": _img(SPOOFS[1])}).json()["faces"]
    assert gated and all(f["rejected"] == "spoof_detected" and f["identity"] is None for f in gated)
