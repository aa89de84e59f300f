"""A real ``facelab serve`` process on loopback: the Python client, load shedding, JSON logs, secrets."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cli_helpers import run_script
from facelab.client import AuthError, Client, ClientFace, InvalidRequest, NotFound, Unavailable
from serve_helpers import ServerProcess, photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-proc")
    keys = {}
    for scope in ("read", "admin"):
        made = run_script(["serve", "keys", "create", "--name", scope, "--scope", scope, "--data-dir", data])
        assert made.returncode == 0, made.stderr
        keys[scope] = made.stdout.strip()
    with ServerProcess(data, ["--workers", "1", "--queue", "0", "--log-format", "json"]) as proc:
        yield proc, keys


def test_client_typed_results_and_errors(server):
    proc, keys = server
    client = Client(proc.url, keys["read"])
    assert client.health()["status"] == "ready"
    faces = client.detect(photo("data/images/t1.jpg"))
    assert len(faces) == 6 and all(isinstance(f, ClientFace) for f in faces)
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 886
    same = client.compare(photo("data/verification/deepface/img1.jpg"), photo("data/verification/deepface/img2.jpg"))
    assert same.matched is True and same.similarity >= same.threshold
    emb = client.embedding(photo("data/verification/deepface/img1.jpg"))
    assert len(emb.vector) == 128 and emb.model
    with pytest.raises(AuthError) as no_key:
        Client(proc.url).models()
    assert no_key.value.status == 401 and no_key.value.code == "unauthorized" and no_key.value.request_id
    with pytest.raises(AuthError) as weak:
        client.system()
    assert weak.value.status == 403
    with pytest.raises(InvalidRequest) as bad:
        client.detect(b"plain text, not a photo")
    assert bad.value.status == 415 and bad.value.code == "unsupported_media_type"
    with pytest.raises(NotFound):
        client.request("GET", "/v1/does-not-exist")
    with pytest.raises(Unavailable) as off:
        client.swap(photo("data/images/t1.jpg"), photo("data/verification/deepface/img1.jpg"))
    assert off.value.code == "feature_unavailable"


def test_saturated_service_sheds_load_with_503_and_retry_after(server):
    proc, keys = server
    data = photo("data/verification/deepface/couple.jpg")
    headers = {"Authorization": f"Bearer {keys['read']}"}

    def one(_: int) -> httpx.Response:
        return httpx.post(f"{proc.url}/v1/detect", files={"image": ("c.jpg", data)}, headers=headers, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes, codes
    for r in answers:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
        else:
            assert r.status_code == 200, r.text
    assert httpx.get(f"{proc.url}/v1/health").status_code == 200


def test_logs_are_json_lines_without_secrets(server):
    proc, keys = server
    import time

    Client(proc.url, keys["admin"]).system()
    for _ in range(50):  # the access line is written just after the response is sent
        lines = [line for line in proc.log.read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines if line.startswith("{")]
        requests = [r for r in records if r["msg"] == "request"]
        if any(r["route"] == "/v1/system" and r["status"] == 200 for r in requests):
            break
        time.sleep(0.1)
    assert records and all("level" in r and "msg" in r for r in records)
    assert any(r["route"] == "/v1/system" and r["status"] == 200 for r in requests)
    text = proc.log.read_text()
    for key in keys.values():
        assert key not in text and key.split("_")[-1] not in text
