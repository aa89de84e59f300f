"""The service's stateless routes and its contract, in process (FastAPI TestClient, real open pack)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from shared_data import missing_dependency, shared_file

try:
    from fastapi.testclient import TestClient
except ImportError:  # pragma: no cover
    missing_dependency("the service tests need the 'serve' extra (fastapi)")

from facelab.serve import ServeSettings, create_app
from facelab.serve.errors import RECENT_ERRORS

T1 = "data/images/t1.jpg"
IMG1 = "data/verification/deepface/img1.jpg"  # Angelina Jolie
IMG2 = "data/verification/deepface/img2.jpg"  # the same person
OTHER = "data/verification/deepface/img17.jpg"  # someone else (master.csv: img1/img17 is "No")


def _bytes(rel: str) -> bytes:
    return Path(shared_file(rel)).read_bytes()


@pytest.fixture(scope="module")
def analyzer():
    from facelab import FaceAnalyzer

    return FaceAnalyzer()


def _wait_ready(client: TestClient) -> None:
    for _ in range(300):
        if client.get("/v1/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(client.get("/v1/health").json())


@pytest.fixture(scope="module")
def service(analyzer, tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-data")
    app = create_app(ServeSettings(data_dir=data, workers=2, queue=4), analyzer=analyzer, gallery=False)
    keys = app.state.facelab.keys
    secrets = {scope: keys.create(f"test-{scope}", scope)[0] for scope in ("read", "write", "admin")}
    with TestClient(app, raise_server_exceptions=False) as client:
        _wait_ready(client)
        yield client, secrets, app


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["error"]["code"] == code, body
    assert resp.headers["x-request-id"] == body["request_id"]
    return body


def test_health_is_public_and_everything_else_needs_a_key(service):
    client, secrets, _ = service
    r = client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["auth_enabled"] is True
    _error(client.get("/v1/models"), 401, "unauthorized")
    assert client.get("/v1/models").headers["www-authenticate"] == "Bearer"
    _error(client.get("/v1/models", headers=_auth("flk_00000000_nope")), 401, "invalid_api_key")
    _error(client.get("/v1/models", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert client.get("/v1/models", headers=_auth(secrets["read"])).status_code == 200
    assert client.get("/v1/models", headers={"x-api-key": secrets["read"]}).status_code == 200


def test_scopes_and_revocation(service):
    client, secrets, app = service
    _error(client.delete("/v1/collections/c1", headers=_auth(secrets["read"])), 403, "forbidden")
    _error(client.get("/v1/system", headers=_auth(secrets["write"])), 403, "forbidden")
    system = client.get("/v1/system", headers=_auth(secrets["admin"]))
    assert system.status_code == 200
    text = system.text
    for secret in secrets.values():
        assert secret not in text and secret.split("_")[-1] not in text
    assert system.json()["pack"] == "open"
    keys = app.state.facelab.keys
    secret, record = keys.create("short-lived", "read")
    assert client.get("/v1/models", headers=_auth(secret)).status_code == 200
    keys.revoke(record.key_id)
    _error(client.get("/v1/models", headers=_auth(secret)), 401, "invalid_api_key")


def test_detect_finds_the_six_faces_of_t1_with_quality(service):
    client, secrets, _ = service
    r = client.post("/v1/detect", files={"image": ("t1.jpg", _bytes(T1), "image/jpeg")}, headers=_auth(secrets["read"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 1280, "height": 886}
    faces = body["faces"]
    assert len(faces) == 6
    areas = [(f["box"]["x2"] - f["box"]["x1"]) * (f["box"]["y2"] - f["box"]["y1"]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        assert f["box_normalized"]["x2"] == pytest.approx(f["box"]["x2"] / 1280)
        assert 0 < f["quality"]["score"] <= 1
    limited = client.post(
        "/v1/detect", files={"image": ("t1.jpg", _bytes(T1))}, data={"max_faces": "2"}, headers=_auth(secrets["read"])
    )
    assert [f["box"] for f in limited.json()["faces"]] == [f["box"] for f in faces[:2]]


def test_compare_and_embeddings(service):
    client, secrets, _ = service
    h = _auth(secrets["read"])
    same = client.post(
        "/v1/compare", files={"source": ("a.jpg", _bytes(IMG1)), "target": ("b.jpg", _bytes(IMG2))}, headers=h
    )
    diff = client.post(
        "/v1/compare", files={"source": ("a.jpg", _bytes(IMG1)), "target": ("c.jpg", _bytes(OTHER))}, headers=h
    )
    assert same.status_code == 200 and diff.status_code == 200, (same.text, diff.text)
    assert same.json()["matched"] is True and diff.json()["matched"] is False
    assert same.json()["threshold"] == diff.json()["threshold"] == pytest.approx(0.923)
    strict = client.post(
        "/v1/compare",
        files={"source": ("a.jpg", _bytes(IMG1)), "target": ("b.jpg", _bytes(IMG2))},
        data={"threshold": "0.999"},
        headers=h,
    )
    assert strict.json()["matched"] is False and strict.json()["similarity"] == pytest.approx(same.json()["similarity"])
    emb = client.post("/v1/embeddings", files={"image": ("a.jpg", _bytes(IMG1))}, headers=h).json()
    vec = np.asarray(emb["embedding"])
    assert emb["dimension"] == 128 == vec.shape[0] and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    emb2 = client.post("/v1/embeddings", files={"image": ("b.jpg", _bytes(IMG2))}, headers=h).json()
    assert float(vec @ np.asarray(emb2["embedding"])) == pytest.approx(same.json()["similarity"], abs=1e-5)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"", 400, "invalid_image"),
        (b"hello, I am text", 415, "unsupported_media_type"),
        ("truncated", 400, "invalid_image"),
        ("bomb", 413, "image_too_large"),
        ("no_face", 200, None),
    ],
)
def test_bad_uploads_get_the_right_envelope_and_the_service_keeps_serving(service, payload, status, code):
    client, secrets, _ = service
    if payload == "truncated":
        payload = _bytes(T1)[:4000]
    elif payload == "bomb":
        payload = _png_header(20000, 20000)
    elif payload == "no_face":
        payload = _bytes("data/images/inspireface/bulk/view.jpg")
    r = client.post("/v1/detect", files={"image": ("x.jpg", payload, "image/jpeg")}, headers=_auth(secrets["read"]))
    if code is None:
        assert r.status_code == 200 and r.json()["faces"] == []
    else:
        _error(r, status, code)
    assert client.get("/v1/health").status_code == 200


def test_limits_are_enforced_before_decoding(service):
    client, secrets, app = service
    h = _auth(secrets["read"])
    big = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024)  # over 10 MiB per image, a JPEG by its magic
    _error(client.post("/v1/detect", files={"image": ("big.jpg", big)}, headers=h), 413, "image_too_large")
    huge = b"x" * (65 * 1024 * 1024)
    r = client.post("/v1/detect", content=huge, headers={**h, "content-type": "multipart/form-data; boundary=x"})
    _error(r, 413, "request_too_large")
    _error(client.post("/v1/detect", json={"image": "abc"}, headers=h), 415, "unsupported_media_type")
    _error(client.post("/v1/detect", files={"other": ("a.jpg", _bytes(IMG1))}, headers=h), 422, "validation_error")
    assert client.get("/v1/health").status_code == 200


def test_request_ids_routes_and_metrics(service):
    client, secrets, _ = service
    r = client.get("/v1/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get("/v1/health", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32
    _error(client.get("/v1/nothing-here", headers=_auth(secrets["read"])), 404, "not_found")
    _error(client.put("/v1/detect", headers=_auth(secrets["write"])), 405, "method_not_allowed")
    metrics = client.get("/metrics", headers=_auth(secrets["admin"]))
    assert metrics.status_code == 200
    assert 'facelab_requests_total{method="POST",route="/v1/detect",status="200"}' in metrics.text
    assert "facelab_stage_seconds_bucket" in metrics.text
    assert any(code == "not_found" for _, code, _ in RECENT_ERRORS)


def test_csp_and_static_page(service):
    client, _, _ = service
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/assets/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert client.get("/assets/app.js").status_code == 200
    for probe in (
        "/assets/../app.py",
        "/assets/..%2f..%2fsettings.py",
        "/assets/%2e%2e/errors.py",
        "/assets//etc/passwd",
    ):
        r = client.get(probe)
        assert r.status_code in (401, 404), probe  # never served; outside /assets a key is asked for first
        assert "def create_app" not in r.text and "root:" not in r.text


def test_cors_is_denied_unless_configured(analyzer, tmp_path, service):
    client, secrets, _ = service
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/detect", headers=pre)
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    app = create_app(
        ServeSettings(data_dir=tmp_path, cors_origins=("https://app.example",)), analyzer=analyzer, gallery=False
    )
    with TestClient(app) as other:
        ok = other.options("/v1/detect", headers={**pre, "Origin": "https://app.example"})
        assert ok.headers.get("access-control-allow-origin") == "https://app.example"
        bad = other.options("/v1/detect", headers=pre)
        assert "access-control-allow-origin" not in {k.lower() for k in bad.headers}


def test_openapi_snapshot_is_reviewed(service):
    """``/openapi.json`` equals tests/serve_openapi.json; regenerate with FACELAB_UPDATE_SNAPSHOTS=1 and review."""
    import os

    client, _, _ = service
    spec = client.get("/openapi.json").json()
    path = Path(__file__).with_name("serve_openapi.json")
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if os.environ.get("FACELAB_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), "no snapshot: run once with FACELAB_UPDATE_SNAPSHOTS=1 and review the file"
    assert json.loads(path.read_text(encoding="utf-8")) == spec, "the API changed: review, then update the snapshot"
