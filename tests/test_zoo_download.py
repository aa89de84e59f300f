"""Downloads against a real HTTP server on 127.0.0.1: verification, resume, mirrors, safe extraction, offline."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facelab.errors import ChecksumError, DownloadError, ModelNotFoundError
from facelab.zoo import (
    FileSpec,
    ModelCard,
    PackCard,
    download_pack,
    install_pack,
    pack_info,
    register_pack,
    resolve_pack,
    unregister_pack,
    verify_pack,
)
from facelab.zoo._hub import download_file

LICENSE = "test licence: research only"


class Server:
    """Serves ``files`` (path -> bytes) with optional misbehaviour, recording every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.truncate_once: set[str] = set()  # send half the body, then drop the connection
        self.fail_once: dict[str, int] = {}  # answer this status once
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path in server.fail_once:
                    code = server.fail_once.pop(self.path)
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.path in server.truncate_once:
                    server.truncate_once.discard(self.path)
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member_bytes(seed: str, n: int = 3000) -> bytes:
    """Deterministic fake ONNX file contents (the installer does not parse members)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return out[:n]


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


class FakePack:
    """A test-registered pack: two fake members in an archive served by ``server``."""

    def __init__(
        self,
        server: Server,
        *,
        layout: str = "",
        pin_archive: bool = True,
        archive: bytes | None = None,
        mirrors: list[str] | None = None,
    ) -> None:
        self.name = f"testpack_{uuid.uuid4().hex[:8]}"
        self.members = {
            "det_fake.onnx": member_bytes(self.name + "det"),
            "rec_fake.onnx": member_bytes(self.name + "rec", 5000),
        }
        self.zip = archive if archive is not None else make_zip({layout + k: v for k, v in self.members.items()})
        self.url_path = f"/{self.name}.zip"
        server.files[self.url_path] = self.zip
        det = ModelCard(
            name=f"fake_det.{self.name}",
            task="detection",
            arch="scrfd",
            license=LICENSE,
            files=(FileSpec("det_fake.onnx", sha(self.members["det_fake.onnx"]), len(self.members["det_fake.onnx"])),),
        )
        rec = ModelCard(
            name=f"fake_rec.{self.name}",
            task="recognition",
            arch="arcface",
            license=LICENSE,
            input_size=(112, 112),
            align_template="arcface_112_5pt",
            embedding_dim=512,
            files=(FileSpec("rec_fake.onnx", sha(self.members["rec_fake.onnx"]), len(self.members["rec_fake.onnx"])),),
        )
        good_zip = make_zip({layout + k: v for k, v in self.members.items()}) if archive is not None else self.zip
        urls = [m + self.url_path for m in mirrors] if mirrors else [server.url + self.url_path]
        self.card = PackCard(
            name=self.name,
            models=(det, rec),
            license=LICENSE,
            archive=FileSpec(f"{self.name}.zip", sha(good_zip) if pin_archive else "", None),
            urls=tuple(urls),
            source_url="http://example.invalid/testpack",
        )
        register_pack(self.card)

    def close(self) -> None:
        unregister_pack(self.name)


@pytest.fixture
def packs():
    made: list[FakePack] = []

    def factory(*args, **kwargs) -> FakePack:
        pack = FakePack(*args, **kwargs)
        made.append(pack)
        return pack

    yield factory
    for pack in made:
        pack.close()


def assert_installed(folder: Path, pack: FakePack) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(pack.members)
    for name, data in pack.members.items():
        assert (folder / name).read_bytes() == data


def test_good_archive_downloads_verifies_and_records_licence(server, home, packs, caplog):
    pack = packs(server)
    with caplog.at_level(logging.WARNING, logger="facelab.zoo"):
        resolved = resolve_pack(pack.name)
    folder = home / "models" / pack.name
    assert resolved.root == folder and resolved.source == "download"
    assert [c.task for c, _ in resolved.models] == ["detection", "recognition"]
    assert [p for _, p in resolved.models] == [folder / "det_fake.onnx", folder / "rec_fake.onnx"]
    assert_installed(folder, pack)
    assert sorted(p.name for p in (home / "models").iterdir()) == [pack.name]  # no .part, zip or temp left
    assert LICENSE in caplog.text
    record = json.loads((home / "licenses" / f"{pack.name}.accepted.json").read_text())
    assert record["license"] == LICENSE and record["pack"] == pack.name and record["shown_at"]
    # second resolve: cache hit, no request; forced re-download does not show the licence again
    n = len(server.requests)
    assert resolve_pack(pack.name).source == "facelab"
    assert len(server.requests) == n
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facelab.zoo"):
        download_pack(pack.name, force=True, progress=False)
    assert len(server.requests) == n + 1
    assert LICENSE not in caplog.text


def test_corrupt_archive_raises_checksum_error_and_leaves_nothing(server, home, packs):
    pack = packs(server)
    server.files[pack.url_path] = pack.zip[:-10] + b"0123456789"
    with pytest.raises(ChecksumError) as info:
        install_pack(pack.card, retries=0)
    message = str(info.value)
    assert f"{pack.name}.zip" in message
    assert pack.card.archive.sha256 in message
    assert sha(server.files[pack.url_path]) in message
    assert list((home / "models").rglob("*")) == []  # no archive, no .part, no pack folder


def test_truncated_download_is_resumed_with_range(server, home, packs):
    pack = packs(server)
    server.truncate_once.add(pack.url_path)
    folder = install_pack(pack.card, backoff=0.01, progress=False)
    assert_installed(folder, pack)
    ranged = [h.get("range") for p, h in server.requests if p == pack.url_path]
    assert len(ranged) == 2
    assert ranged[0] is None
    half = len(pack.zip) // 2
    assert ranged[1] == f"bytes={half}-"


def test_server_ignoring_range_restarts_download(server, home, packs):
    pack = packs(server)
    server.truncate_once.add(pack.url_path)
    server.ignore_range = True
    folder = install_pack(pack.card, backoff=0.01, progress=False)
    assert_installed(folder, pack)
    ranged = [h.get("range") for p, h in server.requests if p == pack.url_path]
    # asked to resume, got the whole file (200, not 206), and kept it from byte 0 rather than appending:
    # the archive checksum verified by install_pack (assert_installed above) fails on an appended copy
    assert len(ranged) == 2 and ranged[0] is None and ranged[1] == f"bytes={len(pack.zip) // 2}-"


def test_mirrors_are_tried_in_order_and_5xx_retried(server, home, packs, tmp_path):
    dead = Server()
    dead_url = dead.url
    dead.close()  # connection refused from now on
    pack = packs(server, mirrors=[server.url + "/missing", dead_url, server.url])
    server.fail_once[pack.url_path] = 503
    folder = install_pack(pack.card, retries=1, backoff=0.01, progress=False)
    assert_installed(folder, pack)
    assert server.paths() == [f"/missing{pack.url_path}", pack.url_path, pack.url_path]


def test_download_file_failure_names_every_mirror(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_file([server.url + "/a.bin", server.url + "/b.bin"], tmp_path / "x.bin", retries=0)
    assert "/a.bin: HTTP 404" in str(info.value) and "/b.bin: HTTP 404" in str(info.value)
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "x.bin.part").exists()


@pytest.mark.parametrize("evil", ["../evil.onnx", "/tmp/facelab_abs_evil.onnx", "sub/../../evil.onnx"])
def test_path_escaping_member_is_refused(server, home, packs, tmp_path, evil):
    entries = {"det_fake.onnx": b"x", evil: b"evil"}
    pack = packs(server, archive=make_zip(entries), pin_archive=False)
    with zipfile.ZipFile(io.BytesIO(pack.zip)) as zf:
        assert evil in zf.namelist()
    with pytest.raises(DownloadError) as info:
        install_pack(pack.card, retries=0)
    assert evil in str(info.value)
    assert not Path("/tmp/facelab_abs_evil.onnx").exists()
    assert not (home / "models" / "evil.onnx").exists() and not (home / "evil.onnx").exists()
    written = [p for p in tmp_path.rglob("*evil*")]
    assert written == []
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]  # temp folder removed


def test_symlink_member_is_refused(server, home, packs):
    pack = packs(
        server, archive=make_zip({"det_fake.onnx": b"x"}, symlinks={"rec_fake.onnx": "/etc/passwd"}), pin_archive=False
    )
    with pytest.raises(DownloadError, match="rec_fake.onnx.*symbolic link"):
        install_pack(pack.card, retries=0)
    assert not (home / "models" / pack.name / "rec_fake.onnx").exists()


@pytest.mark.parametrize("layout", ["wrap/", "antelope/antelope/"])
def test_wrapped_and_nested_layouts(server, home, packs, layout):
    pack = packs(server, layout=layout)
    folder = install_pack(pack.card, progress=False)
    assert_installed(folder, pack)


def test_unpinned_archive_member_mismatch(server, home, packs):
    pack = packs(server, pin_archive=False)
    bad = dict(pack.members)
    bad["rec_fake.onnx"] = bad["rec_fake.onnx"][:-1] + b"!"
    server.files[pack.url_path] = make_zip(bad)
    with pytest.raises(ChecksumError, match="member rec_fake.onnx") as info:
        install_pack(pack.card, retries=0)
    assert sha(bad["rec_fake.onnx"]) in str(info.value)
    assert not (home / "models" / f"{pack.name}.zip").exists()  # an unpinned bad archive is not kept


def test_offline_error_names_file_hash_and_path(server, home, packs, monkeypatch):
    pack = packs(server)
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pack(pack.name)
    message = str(info.value)
    for name, data in pack.members.items():
        assert name in message
        assert sha(data) in message
        assert str(home / "models" / pack.name / name) in message
    assert server.requests == []
    monkeypatch.delenv("FACELAB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match="download=False"):
        resolve_pack(pack.name, download=False)
    assert server.requests == []


def test_insightface_folder_is_reused(server, home, packs, tmp_path, caplog):
    pack = packs(server)
    root = tmp_path / "ins"
    folder = root / "models" / pack.name / pack.name  # nested, as antelopev2.zip extracts
    folder.mkdir(parents=True)
    for name, data in pack.members.items():
        (folder / name).write_bytes(data)
    with caplog.at_level(logging.INFO, logger="facelab.zoo"):
        resolved = resolve_pack(pack.name, insightface_root=root)
    assert resolved.source == "insightface" and resolved.root == folder
    assert [p for _, p in resolved.models] == [folder / "det_fake.onnx", folder / "rec_fake.onnx"]
    assert str(folder) in caplog.text
    assert server.requests == []
    assert not (home / "models" / pack.name).exists()
    # a damaged InsightFace folder is not trusted: download into the facelab home instead
    (folder / "rec_fake.onnx").write_bytes(b"broken")
    resolved = resolve_pack(pack.name, insightface_root=root, progress=False)
    assert resolved.source == "download" and resolved.root == home / "models" / pack.name
    assert_installed(resolved.root, pack)


def test_incomplete_pack_folder_is_repaired(server, home, packs):
    pack = packs(server)
    folder = install_pack(pack.card, progress=False)
    (folder / "det_fake.onnx").unlink()  # interrupted extraction
    data = pack.members["rec_fake.onnx"]
    (folder / "rec_fake.onnx").write_bytes(data[: len(data) // 2])  # truncated member
    resolved = resolve_pack(pack.name, progress=False)
    assert resolved.source == "download"
    assert_installed(folder, pack)


def test_verify_pack_rehashes(server, home, packs):
    pack = packs(server)
    folder = install_pack(pack.card, progress=False)
    report = verify_pack(pack.name)
    assert report.ok and report.location == "facelab" and report.root == folder
    assert [f.sha256 for f in report.files] == [sha(pack.members["det_fake.onnx"]), sha(pack.members["rec_fake.onnx"])]
    # same size, same mtime, different content: the hash cache would not notice, verify does
    target = folder / "rec_fake.onnx"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = verify_pack(pack.name)
    assert not report.ok
    bad = report.to_dict()["files"][1]
    assert bad["filename"] == "rec_fake.onnx" and bad["sha256_ok"] is False and bad["size_ok"] is True
    assert bad["sha256"] == sha(bytes(data))
    # after verify refreshed the cache, resolve sees the damage and repairs it
    resolve_pack(pack.name, progress=False)
    assert verify_pack(pack.name).ok


def test_pack_info_reports_installation(server, home, packs):
    pack = packs(server)
    info = pack_info(pack.name)
    assert info["installed"]["location"] == "none" and info["license_accepted"] is None
    assert info["total_bytes"] == sum(len(v) for v in pack.members.values())
    install_pack(pack.card, progress=False)
    info = pack_info(pack.name, hashes=True)
    assert info["installed"]["complete"] is True and info["installed"]["location"] == "facelab"
    assert info["license_accepted"]["license"] == LICENSE
    assert info["model_names"] == [f"fake_det.{pack.name}", f"fake_rec.{pack.name}"]
    json.dumps(info)  # JSON-safe for the CLI


def test_stale_partial_file_is_discarded(server, home, tmp_path):
    body = member_bytes("stale", 4000)
    server.files["/f.bin"] = body
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    (tmp_path / "dl" / "f.bin.part").write_bytes(b"\0" * 1000)  # left over from another version of the file
    download_file([server.url + "/f.bin"], dest, sha256=sha(body), size=len(body), backoff=0.01)
    assert dest.read_bytes() == body
    assert [h.get("range") for _, h in server.requests] == ["bytes=1000-", None]


def test_download_file_offline_names_hash_and_path(server, home, tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        download_file([server.url + "/f.bin"], tmp_path / "f.bin", sha256="ab" * 32)
    assert "ab" * 32 in str(info.value) and str(tmp_path / "f.bin") in str(info.value)
    assert server.requests == []


def test_per_file_pack_from_file_urls_works_offline(home, tmp_path, monkeypatch):
    """A pack without an archive whose members come from local files (as a PyPI-installed weights package)."""
    source = tmp_path / "site-packages" / "weights"
    source.mkdir(parents=True)
    data = {"det.dat": member_bytes("d", 1500), "rec.dat": member_bytes("r", 2500)}
    for name, content in data.items():
        (source / name).write_bytes(content)
    name = f"localpack_{uuid.uuid4().hex[:6]}"
    det = ModelCard(
        name=f"mmod.{name}",
        task="detection",
        arch="dlib_mmod",
        license="CC0",
        files=(FileSpec("det.dat", sha(data["det.dat"]), 1500),),
        urls=((source / "det.dat").as_uri(),),
    )
    rec = ModelCard(
        name=f"resnet.{name}",
        task="recognition",
        arch="dlib_resnet",
        license="CC0",
        input_size=(150, 150),
        align_template="dlib_5pt",
        embedding_dim=128,
        files=(FileSpec("rec.dat", sha(data["rec.dat"]), 2500),),
        urls=((source / "rec.dat").as_uri(),),
    )
    no_url = ModelCard(
        name=f"extra.{name}",
        task="genderage",
        arch="x",
        license="CC0",
        input_size=(96, 96),
        files=(FileSpec("extra.dat", "cd" * 32, 10),),
    )
    register_pack(PackCard(name=name, models=(det, rec), license="CC0"))
    register_pack(
        PackCard(
            name=name + "_b",
            models=(
                no_url,
                ModelCard(
                    name=f"mmod2.{name}",
                    task="detection",
                    arch="dlib_mmod",
                    license="CC0",
                    files=(FileSpec("det.dat", sha(data["det.dat"]), 1500),),
                    urls=((source / "det.dat").as_uri(),),
                ),
            ),
            license="CC0",
        )
    )
    try:
        monkeypatch.setenv("FACELAB_OFFLINE", "1")
        resolved = resolve_pack(name)
        assert resolved.source == "download"
        assert {p.name: p.read_bytes() for _, p in resolved.models} == data
        assert resolved.root == home / "models" / name
        with pytest.raises(ModelNotFoundError) as info:
            resolve_pack(name + "_b")
        assert "extra.dat" in str(info.value) and str(home / "models" / (name + "_b") / "extra.dat") in str(info.value)
    finally:
        unregister_pack(name)
        unregister_pack(name + "_b")


def test_zip_size_limit(tmp_path):
    from facelab.zoo._hub import safe_extract_zip

    archive = tmp_path / "big.zip"
    archive.write_bytes(make_zip({"a.onnx": b"\0" * 10_000}))
    with pytest.raises(DownloadError, match="limit"):
        safe_extract_zip(archive, tmp_path / "out", max_bytes=1000)
    assert list((tmp_path / "out").iterdir()) == []
    archive.write_bytes(b"PK not really a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        safe_extract_zip(archive, tmp_path / "out")


def test_archive_put_by_hand_is_used_offline(server, home, packs, monkeypatch):
    pack = packs(server)
    monkeypatch.setenv("FACELAB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_pack(pack.name)
    archive = home / "models" / f"{pack.name}.zip"
    assert str(archive) in str(info.value)  # the error says where the archive may go
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(pack.zip)
    resolved = resolve_pack(pack.name)
    assert_installed(resolved.root, pack)
    assert server.requests == []
    # a wrong archive put by hand is reported, never trusted
    monkeypatch.delenv("FACELAB_OFFLINE")
    other = packs(server)
    (home / "models" / f"{other.name}.zip").write_bytes(pack.zip)
    with pytest.raises(ChecksumError, match=other.card.archive.sha256):
        resolve_pack(other.name, download=False)
    assert server.requests == []
