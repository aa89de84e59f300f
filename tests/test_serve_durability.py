"""Acknowledged writes survive SIGKILL; concurrent enroll and delete leave no orphans (real server process)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_helpers import run_script
from facelab.client import Client, NotFound, ServiceError
from serve_helpers import ServerProcess, photo

pytestmark = pytest.mark.slow

PHOTOS = [f"data/verification/deepface/img{i}.jpg" for i in (1, 2, 4, 5, 6, 7)]


def _key(data) -> str:
    made = run_script(["serve", "keys", "create", "--name", "w", "--scope", "write", "--data-dir", data])
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_every_acknowledged_enrollment_survives_sigkill(tmp_path):
    data = tmp_path / "data"
    key = _key(data)
    images = [photo(p) for p in PHOTOS]
    server = ServerProcess(data, ["--workers", "2", "--queue", "64"]).start()
    client = Client(server.url, key, timeout=120)
    client.create_collection("dur")
    outcomes: dict[int, str] = {}
    acked: dict[int, int] = {}
    lock = threading.Lock()

    def enroll(i: int) -> None:
        try:
            body = client.enroll("dur", f"p{i}", [images[i % len(images)]], external_id=f"e{i}")
            with lock:
                acked[i] = body["person"]["id"]
                outcomes[i] = "acked"
        except ServiceError as exc:
            with lock:
                outcomes[i] = "refused" if exc.status else "dropped"  # status 0: no answer (server killed)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(enroll, i) for i in range(30)]
        deadline = time.monotonic() + 240
        while len(acked) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # mid-stream: some requests are being processed right now
        for f in futures:
            f.result()
    assert len(acked) >= 6, outcomes
    dropped = [i for i, o in outcomes.items() if o == "dropped"]
    assert dropped, "the kill should have interrupted some requests"
    refused = [i for i, o in outcomes.items() if o == "refused"]

    restarted = ServerProcess(data, ["--workers", "2"]).start()
    try:
        again = Client(restarted.url, key)
        persons = {p["external_id"]: p for p in again.persons("dur")}
        for i, pid in acked.items():
            assert f"e{i}" in persons and persons[f"e{i}"]["id"] == pid and persons[f"e{i}"]["face_count"] == 1
        for i in refused:
            assert f"e{i}" not in persons
        # an interrupted request is all or nothing: if its person exists, it has its face
        for i in dropped:
            if f"e{i}" in persons:
                assert persons[f"e{i}"]["face_count"] == 1
        counts = again.collection("dur")["counts"]
        assert counts["faces"] == sum(p["face_count"] for p in persons.values()) == counts["persons"]
    finally:
        restarted.stop()


def test_concurrent_add_and_delete_of_one_person_leaves_no_orphans(tmp_path):
    data = tmp_path / "data"
    key = _key(data)
    img = photo(PHOTOS[0])
    with ServerProcess(data, ["--workers", "2", "--queue", "64"]) as server:
        client = Client(server.url, key, timeout=120)
        client.create_collection("race")
        pid = client.enroll("race", "target", [img])["person"]["id"]
        keeper = client.enroll("race", "keeper", [photo(PHOTOS[1])])["person"]["id"]
        results = []

        def add() -> None:
            for _ in range(6):
                try:
                    client.add_faces("race", pid, [img])
                    results.append("added")
                except NotFound:
                    results.append("gone")

        def delete() -> None:
            time.sleep(0.3)
            client.delete_person("race", pid)

        with ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(add), pool.submit(add), pool.submit(delete)]
            for job in jobs:
                job.result()
        with pytest.raises(NotFound):
            client.person("race", pid)
        persons = client.persons("race")
        assert [p["id"] for p in persons] == [keeper]
        counts = client.collection("race")["counts"]
        assert counts["faces"] == 1 == persons[0]["face_count"], (counts, results)
        hits = client.search("race", img)
        assert all(m["person_id"] != pid for face in hits for m in face["matches"])
