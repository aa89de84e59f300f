"""Model storage and downloads: ``$FACELAB_HOME``, verified downloads, safe archive extraction, licences.

Layout under the home folder (``$FACELAB_HOME``, default ``~/.facelab``)::

    models/<pack>/<file>.onnx       verified pack members
    models/<pack>.zip.part          a download in progress (resumed with an HTTP Range request)
    licenses/<pack>.accepted.json   when the pack's licence was shown, and its text
    cache/sha256.json               SHA-256 of files already hashed, keyed by path, size and mtime

Downloads use only the standard library (``urllib``). Each mirror is tried in order; each try
is retried with exponential backoff; a partial ``.part`` file is resumed, or restarted when the
server ignores the Range header; the finished file is checked against its pinned size and
SHA-256 and only then renamed into place (so a file at its final path is always complete).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from facelab.convert.cache import atomic_write
from facelab.errors import ChecksumError, DownloadError, ModelNotFoundError
from facelab.version import __version__
from facelab.zoo.card import FileSpec, PackCard

__all__ = [
    "facelab_home",
    "models_dir",
    "insightface_home",
    "is_offline",
    "sha256_file",
    "cached_sha256",
    "record_sha256",
    "FileCheck",
    "check_file",
    "download_file",
    "safe_extract_zip",
    "find_content_root",
    "ensure_license_accepted",
    "license_record_path",
]

_logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: HTTP statuses worth retrying on the same mirror.
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_cache_lock = threading.Lock()


def facelab_home(home: str | os.PathLike | None = None) -> Path:
    """The facelab home folder: ``home`` if given, else ``$FACELAB_HOME``, else ``~/.facelab``."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("FACELAB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".facelab"


def models_dir(pack: str, home: str | os.PathLike | None = None) -> Path:
    """Folder of a pack's verified files: ``<home>/models/<pack>``."""
    return facelab_home(home) / "models" / pack


def insightface_home(root: str | os.PathLike | None = None) -> Path:
    """InsightFace's storage root: ``root`` if given, else ``$INSIGHTFACE_HOME``, else ``~/.insightface``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("INSIGHTFACE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".insightface"


def is_offline() -> bool:
    """Whether ``FACELAB_OFFLINE`` forbids downloads (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get("FACELAB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: str | os.PathLike) -> str:
    """Full lowercase hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_file(home: str | os.PathLike | None) -> Path:
    return facelab_home(home) / "cache" / "sha256.json"


def cached_sha256(path: str | os.PathLike, home: str | os.PathLike | None = None) -> str:
    """SHA-256 of ``path``, reusing an earlier result while the file's size and mtime are unchanged.

    The cache lives in ``<home>/cache/sha256.json`` (never next to the file, so read-only and
    user folders stay untouched). A cache that cannot be read or written only costs a re-hash.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    cache_path = _cache_file(home)
    with _cache_lock:
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        entry = cache.get(key)
        if isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns] and len(entry) == 3:
            return str(entry[2])
    digest = sha256_file(path)
    record_sha256(path, digest, home)
    return digest


def record_sha256(path: str | os.PathLike, digest: str, home: str | os.PathLike | None = None) -> None:
    """Remember a digest just computed for ``path`` (as it is now) in the hash cache."""
    path = Path(path).resolve()
    st = path.stat()
    with _cache_lock:
        try:
            cache = json.loads(_cache_file(home).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        cache[str(path)] = [st.st_size, st.st_mtime_ns, digest]
        with contextlib.suppress(OSError):
            _write_json_atomic(_cache_file(home), cache)


def _write_json_atomic(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


@dataclass(frozen=True)
class FileCheck:
    """The state of one expected file on disk.

    Attributes:
        filename: the card's file name.
        path: where the file was looked for.
        present: the file exists.
        size: its size in bytes (``None`` when absent).
        expected_size / expected_sha256: the pinned values (``None`` / ``""`` when not pinned).
        size_ok: size matches the pin (``None`` when absent or not pinned).
        sha256: its SHA-256 (``""`` when absent, or when the size was already wrong).
        sha256_ok: hash matches the pin (``None`` when absent or not pinned).
    """

    filename: str
    path: Path
    present: bool
    size: int | None
    expected_size: int | None
    expected_sha256: str
    size_ok: bool | None
    sha256: str
    sha256_ok: bool | None

    @property
    def ok(self) -> bool:
        """Present and not contradicting any pin."""
        return self.present and self.size_ok is not False and self.sha256_ok is not False

    @property
    def problem(self) -> str:
        """A short description of what is wrong (empty when :attr:`ok`)."""
        if not self.present:
            return "missing"
        if self.size_ok is False:
            return f"size {self.size} bytes, expected {self.expected_size}"
        if self.sha256_ok is False:
            return f"sha256 {self.sha256}, expected {self.expected_sha256}"
        return ""

    def to_dict(self) -> dict[str, object]:
        """JSON-safe dict (path as a string), including ``ok`` and ``problem``."""
        return {
            "filename": self.filename,
            "path": str(self.path),
            "present": self.present,
            "size": self.size,
            "expected_size": self.expected_size,
            "size_ok": self.size_ok,
            "sha256": self.sha256,
            "expected_sha256": self.expected_sha256,
            "sha256_ok": self.sha256_ok,
            "ok": self.ok,
            "problem": self.problem,
        }


def check_file(
    spec: FileSpec,
    path: str | os.PathLike,
    *,
    use_cache: bool = True,
    home: str | os.PathLike | None = None,
    hashes: bool = True,
) -> FileCheck:
    """Compare a file on disk with its :class:`~facelab.zoo.card.FileSpec`.

    Args:
        spec: the pinned name, SHA-256 and size.
        path: the file to check.
        use_cache: reuse a hash cached for an unchanged file (see :func:`cached_sha256`);
            ``False`` always re-reads the file.
        home: facelab home holding the hash cache.
        hashes: compute the SHA-256; ``False`` checks presence and size only (``sha256_ok`` is ``None``).
    """
    path = Path(path)
    if not path.is_file():
        return FileCheck(spec.filename, path, False, None, spec.size_bytes, spec.sha256, None, "", None)
    size = path.stat().st_size
    size_ok = None if spec.size_bytes is None else size == spec.size_bytes
    digest = ""
    if hashes and size_ok is not False:
        digest = cached_sha256(path, home) if use_cache else sha256_file(path)
    sha_ok = None if not spec.sha256 or not digest else digest == spec.sha256
    return FileCheck(spec.filename, path, True, size, spec.size_bytes, spec.sha256, size_ok, digest, sha_ok)


# ----------------------------------------------------------------------------------------- download


class _TooLarge(Exception):
    """The download grew past its size limit."""


class _RestartDownload(Exception):
    """The partial file cannot be resumed; start from byte 0."""


class _Progress:
    """A tqdm bar when wanted and available, otherwise nothing."""

    def __init__(self, enabled: bool | None, total: int | None, initial: int, label: str) -> None:
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            _logger.debug("tqdm is not installed: no progress bar")
            return
        self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _request(url: str, offset: int, timeout: float):  # noqa: ANN202 - http.client.HTTPResponse
    headers = {"User-Agent": f"facelab/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_once(
    url: str,
    part: Path,
    expected_size: int | None,
    progress: bool | None,
    timeout: float,
    label: str,
    max_bytes: int | None = None,
) -> None:
    """Append the rest of ``url`` to ``part`` (resuming from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        raise _RestartDownload(f"partial file is larger ({offset}) than expected ({expected_size})")
    if expected_size is not None and offset == expected_size:
        return
    try:
        response = _request(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            raise _RestartDownload("server refused the Range request (416)") from exc
        raise
    with response:
        status = getattr(response, "status", 200)
        mode = "ab"
        if offset and status == 206:
            content_range = response.headers.get("Content-Range", "")
            start = content_range.split(" ", 1)[-1].split("-", 1)[0]
            if not start.isdigit() or int(start) != offset:
                raise _RestartDownload(f"unexpected Content-Range {content_range!r} for offset {offset}")
            _logger.info("%s: resuming at byte %d", label, offset)
        elif offset:
            _logger.info("%s: server ignored the Range request (HTTP %s); restarting from byte 0", label, status)
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = expected_size
        if total is None and length and length.isdigit():
            total = offset + int(length)
        bar = _Progress(progress, total, offset, label)
        try:
            with open(part, mode) as fh:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    bar.update(len(block))
                    if max_bytes is not None and fh.tell() > max_bytes:
                        raise _TooLarge(f"{label}: download exceeds the limit of {max_bytes} bytes")
        finally:
            bar.close()
        if length and length.isdigit():
            got = part.stat().st_size - offset
            if got < int(length):
                raise http.client.IncompleteRead(b"", int(length) - got)


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str = "",
    size: int | None = None,
    progress: bool | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    max_bytes: int | None = None,
) -> Path:
    """Download ``dest`` from the first mirror that delivers a file matching its pins.

    The bytes go to ``dest + ".part"`` (resumed across tries and calls with an HTTP Range
    request; restarted when a server ignores it). The finished file is checked against ``size``
    and ``sha256`` and renamed onto ``dest`` atomically; on a mismatch the partial file is
    deleted and the next mirror is tried.

    Args:
        urls: mirrors, tried in order.
        dest: final path; its folder is created.
        sha256: pinned lowercase hex SHA-256, or ``""`` (then only logged).
        size: pinned size in bytes, or ``None``.
        progress: tqdm bar on stderr: ``None`` = only when stderr is a terminal.
        retries: further tries per mirror after a network failure (HTTP 404 moves on at once).
        backoff: seconds before the first retry, doubled for each further one.
        timeout: socket timeout per request, seconds.
        max_bytes: refuse (and stop) a download larger than this.

    ``file://`` URLs work too (a verified copy); they are the only ones allowed while
    ``FACELAB_OFFLINE`` is set.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ChecksumError: every mirror that answered delivered a file of the wrong size or hash
            (the message names the file, the expected and the actual hash).
        DownloadError: no mirror delivered the file after its retries.
        ModelNotFoundError: ``FACELAB_OFFLINE`` is set and no ``file://`` URL is given (the
            message names the file, its SHA-256 and the path to put it at).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if is_offline():
        local = [u for u in urls if u.startswith("file:")]
        if not local:
            raise ModelNotFoundError(
                f"{dest.name} (sha256 {sha256 or 'not pinned'}) is not on disk and FACELAB_OFFLINE is set: "
                f"put it at {dest} (it can be downloaded from {urls[0] if urls else 'nowhere known'})"
            )
        urls = local
    if not urls:
        raise DownloadError(f"{dest.name}: no download URL known")
    if max_bytes is not None and size is not None and size > max_bytes:
        raise DownloadError(f"{dest.name}: pinned size {size} exceeds the limit of {max_bytes} bytes")
    failures: list[str] = []
    checksum_error: ChecksumError | None = None
    stale = part.exists() and part.stat().st_size > 0  # left by an earlier run, maybe of another file version
    for url in urls:
        attempt = 0
        while True:
            try:
                _fetch_once(url, part, size, progress, timeout, dest.name, max_bytes)
            except _TooLarge as exc:
                part.unlink(missing_ok=True)
                failures.append(f"{url}: {exc}")
                break
            except _RestartDownload as exc:
                _logger.info("%s: %s; restarting", dest.name, exc)
                part.unlink(missing_ok=True)
                attempt += 1
                if attempt > retries:
                    failures.append(f"{url}: {exc}")
                    break
                continue
            except urllib.error.HTTPError as exc:
                retryable = exc.code in _RETRYABLE_STATUS
                if not retryable or attempt >= retries:
                    failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
                    break
                attempt += 1
                delay = backoff * 2 ** (attempt - 1)
                _logger.warning(
                    "%s: HTTP %s from %s; retry %d/%d in %.1f s", dest.name, exc.code, url, attempt, retries, delay
                )
                time.sleep(delay)
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                if attempt >= retries or url.startswith("file:"):  # a local file does not come back by waiting
                    failures.append(f"{url}: {type(exc).__name__}: {exc}")
                    break
                attempt += 1
                delay = backoff * 2 ** (attempt - 1)
                _logger.warning(
                    "%s: download from %s interrupted (%s: %s); retry %d/%d in %.1f s (resuming)",
                    dest.name,
                    url,
                    type(exc).__name__,
                    exc,
                    attempt,
                    retries,
                    delay,
                )
                time.sleep(delay)
                continue
            # The transfer ended cleanly: verify.
            actual_size = part.stat().st_size if part.exists() else 0
            actual_sha = sha256_file(part) if part.exists() else ""
            mismatch = (size is not None and actual_size != size) or (sha256 and actual_sha != sha256)
            if mismatch and stale:
                _logger.info("%s: resumed partial file does not verify; downloading it again from the start", dest.name)
                stale = False
                part.unlink(missing_ok=True)
                continue
            stale = False
            if size is not None and actual_size != size:
                part.unlink(missing_ok=True)
                checksum_error = ChecksumError(
                    f"{dest.name}: downloaded {actual_size} bytes from {url}, expected {size} "
                    f"(expected sha256 {sha256 or 'not pinned'}, actual sha256 {actual_sha})"
                )
                failures.append(str(checksum_error))
                _logger.warning("%s", checksum_error)
                break
            if sha256 and actual_sha != sha256:
                part.unlink(missing_ok=True)
                checksum_error = ChecksumError(
                    f"{dest.name}: sha256 mismatch for the file from {url}: expected {sha256}, actual {actual_sha}"
                )
                failures.append(str(checksum_error))
                _logger.warning("%s", checksum_error)
                break
            if not sha256:
                _logger.warning("%s: no pinned sha256; downloaded file has sha256 %s", dest.name, actual_sha)
            os.replace(part, dest)
            _logger.info("%s: downloaded from %s (%d bytes, sha256 %s)", dest.name, url, actual_size, actual_sha)
            return dest
    if checksum_error is not None:
        if len(urls) > 1:
            raise ChecksumError(f"{checksum_error} (all mirrors: {'; '.join(failures)})")
        raise checksum_error
    raise DownloadError(f"{dest.name}: download failed from every mirror: {'; '.join(failures)}")


# ---------------------------------------------------------------------------------------- archives


def _member_problem(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if "\x00" in name:
        return "has a NUL byte in its name"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "escapes the target folder with '..'"
    return ""


def safe_extract_zip(archive: str | os.PathLike, target_parent: str | os.PathLike, *, max_bytes: int = 8 << 30) -> Path:
    """Extract a zip archive into a new temporary folder under ``target_parent``, refusing unsafe members.

    Every member is checked before anything is written: absolute paths (``/x``, ``C:x``), names
    with a ``..`` component and symbolic links are rejected.

    Args:
        archive: the zip file.
        target_parent: folder that receives the temporary extraction folder (use the final
            destination's parent so the later move is a rename on one file system).
        max_bytes: refuse archives whose members add up to more than this (default 8 GiB).

    Returns:
        The temporary folder holding the extracted tree; the caller moves what it needs out of
        it and deletes it.

    Raises:
        DownloadError: the archive is not a readable zip, or a member is unsafe (the message
            names the member).
    """
    archive = Path(archive)
    target_parent = Path(target_parent)
    target_parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip archive: {exc}") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            problem = _member_problem(info)
            if problem:
                raise DownloadError(f"{archive.name}: refusing to extract member {info.filename!r}: it {problem}")
        total = sum(info.file_size for info in infos)
        if total > max_bytes:
            raise DownloadError(f"{archive.name}: refusing to extract {total} bytes (limit {max_bytes})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.stem}.extract-", dir=target_parent))
        try:
            root = tmp.resolve()
            for info in infos:
                out = (tmp / info.filename.replace("\\", "/")).resolve()
                if root not in out.parents and out != root:
                    raise DownloadError(f"{archive.name}: refusing to extract member {info.filename!r}: it escapes")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError(f"{archive}: extraction failed: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tmp


def _visible(entries: Iterable[Path]) -> list[Path]:
    return [e for e in entries if not e.name.startswith(".") and e.name != "__MACOSX"]


def find_content_root(folder: str | os.PathLike, wanted: Iterable[str] = ()) -> Path:
    """The folder that actually holds a pack's files, unwrapping single wrapping folders.

    ``antelopev2.zip`` extracts to ``antelopev2/antelopev2/*.onnx``; other archives wrap their
    files in one folder. Starting at ``folder``, descend while the current folder holds none of
    the ``wanted`` file names (or no ``.onnx`` file when none are given) and exactly one
    visible sub-folder.
    """
    current = Path(folder)
    wanted = set(wanted)
    while True:
        entries = _visible(current.iterdir()) if current.is_dir() else []
        files = {e.name for e in entries if e.is_file()}
        has_content = bool(files & wanted) if wanted else any(n.endswith(".onnx") for n in files)
        dirs = [e for e in entries if e.is_dir()]
        if has_content or len(dirs) != 1:
            return current
        current = dirs[0]


# ---------------------------------------------------------------------------------------- licences


def license_record_path(pack: str, home: str | os.PathLike | None = None) -> Path:
    """Where the acceptance of a pack's licence is recorded: ``<home>/licenses/<pack>.accepted.json``."""
    return facelab_home(home) / "licenses" / f"{pack}.accepted.json"


def ensure_license_accepted(pack: PackCard, home: str | os.PathLike | None = None) -> bool:
    """Show a pack's licence once, before its first download, and record that it was shown.

    The licence is logged at WARNING level; the record (JSON with the pack, licence text,
    source and UTC time) goes to :func:`license_record_path`.

    Returns:
        ``True`` when the licence was shown now, ``False`` when it had been shown before.
    """
    record = license_record_path(pack.name, home)
    if record.is_file():
        return False
    _logger.warning(
        "Model pack %r is licensed: %s. Source: %s. By downloading and using it you accept these terms.",
        pack.name,
        pack.license,
        pack.source_url or (pack.urls[0] if pack.urls else "unknown"),
    )
    data = {
        "pack": pack.name,
        "license": pack.license,
        "source_url": pack.source_url,
        "urls": list(pack.urls),
        "shown_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "facelab_version": __version__,
    }
    with contextlib.suppress(OSError):
        _write_json_atomic(record, data)
    return True
