"""Find a pack's files: verified cache, an existing InsightFace folder, a download, or a user folder.

:func:`resolve_pack` is what the pipeline calls. For a zoo name it looks, in order, at

1. ``$FACELAB_HOME/models/<pack>/`` when every member is present with its pinned size and SHA-256;
2. ``<insightface root>/models/<pack>/`` (InsightFace's own download, nested ``antelopev2/antelopev2``
   layout included) when every member there verifies;
3. a download of the pack (unless ``download=False`` or ``FACELAB_OFFLINE=1``, which raise
   :class:`~facelab.errors.ModelNotFoundError` naming each missing file, its SHA-256 and where
   to put it).

An incomplete or corrupt pack folder (an interrupted extraction, a truncated file) is never
trusted: its bad members are replaced by the download. For a folder of ONNX files, each file is
identified by SHA-256 against the registered cards, else classified by its signature as
InsightFace does (:mod:`facelab.zoo._inspect`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import ChecksumError, DownloadError, ModelError, ModelNotFoundError
from facelab.zoo._hub import (
    FileCheck,
    cached_sha256,
    check_file,
    download_file,
    ensure_license_accepted,
    facelab_home,
    find_content_root,
    insightface_home,
    is_offline,
    license_record_path,
    models_dir,
    record_sha256,
    safe_extract_zip,
    sha256_file,
)
from facelab.zoo._inspect import classify_signature, read_signature
from facelab.zoo._registry import cards_by_sha256, get_pack, list_packs, pack_builder
from facelab.zoo.card import FileSpec, ModelCard, PackCard

__all__ = [
    "ResolvedPack",
    "PackReport",
    "resolve_pack",
    "resolve_folder",
    "identify_model",
    "install_pack",
    "download_pack",
    "verify_pack",
    "pack_info",
]

_logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass
class ResolvedPack:
    """A pack whose files are on disk and identified.

    Attributes:
        name: pack name (the folder name for a user folder).
        root: folder holding the files.
        models: ``(card, path)`` per model to use, detection first, at most one per task.
        card: the zoo pack card (``None`` for a user folder).
        source: ``"facelab"`` (verified cache), ``"download"`` (just downloaded or repaired),
            ``"insightface"`` (an InsightFace folder) or ``"folder"`` (a user folder).
        extras: recognised models not used for analysis: face swappers and later models of a
            task already taken (InsightFace keeps the first per task).
        skipped: ``(path, reason)`` of files that could not be used (only with ``strict=False``).
    """

    name: str
    root: Path
    models: list[tuple[ModelCard, Path]]
    card: PackCard | None = None
    source: str = ""
    extras: list[tuple[ModelCard, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def model(self, task: str) -> tuple[ModelCard, Path] | None:
        """The ``(card, path)`` used for ``task``, or ``None``."""
        return next(((c, p) for c, p in self.models if c.task == task), None)

    @property
    def tasks(self) -> list[str]:
        """Tasks of :attr:`models`, in order."""
        return [c.task for c, _ in self.models]


@dataclass
class PackReport:
    """Result of :func:`verify_pack`.

    Attributes:
        name: pack name.
        root: the folder checked.
        location: ``"facelab"`` or ``"insightface"``.
        files: one :class:`~facelab.zoo._hub.FileCheck` per member file.
    """

    name: str
    root: Path
    location: str
    files: list[FileCheck]

    @property
    def ok(self) -> bool:
        """Every member present with the pinned size and SHA-256."""
        return all(f.ok for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the CLI."""
        return {
            "name": self.name,
            "root": str(self.root),
            "location": self.location,
            "ok": self.ok,
            "files": [f.to_dict() for f in self.files],
        }


def _specs(pack: PackCard) -> list[FileSpec]:
    return [spec for card in pack.models for spec in card.files]


def _check(pack: PackCard, folder: Path, *, use_cache: bool, home: PathLike | None) -> list[FileCheck]:
    return [check_file(spec, folder / spec.filename, use_cache=use_cache, home=home) for spec in _specs(pack)]


def _insightface_folder(pack: PackCard, root: PathLike | None) -> Path | None:
    base = insightface_home(root) / "models" / pack.name
    if not base.is_dir():
        return None
    return find_content_root(base, [s.filename for s in _specs(pack)])


def _summary(checks: list[FileCheck]) -> str:
    bad = [f"{c.filename}: {c.problem}" for c in checks if not c.ok]
    return ", ".join(bad) if bad else "complete"


def _not_available(
    pack: PackCard, dest: Path, checks: list[FileCheck], reason: str, elsewhere: str = ""
) -> ModelNotFoundError:
    lines = [f"model pack {pack.name!r} is not available and {reason}. Missing or invalid files:"]
    urls = {spec.filename: card.urls for card in pack.models for spec in card.files}
    for c in checks:
        if c.ok:
            continue
        size = f", {c.expected_size} bytes" if c.expected_size else ""
        source = f" (from {urls[c.filename][0]})" if pack.archive is None and urls.get(c.filename) else ""
        pin = c.expected_sha256 or "not pinned"
        lines.append(f"  {c.filename} (sha256 {pin}{size}) [{c.problem}] -> put it at {c.path}{source}")
    if pack.archive is not None and pack.urls:
        pin = f" (sha256 {pack.archive.sha256})" if pack.archive.sha256 else ""
        lines.append(
            f"The files come in {pack.urls[0]}{pin}: download it elsewhere and put it at "
            f"{dest.parent / pack.archive.filename} (or extract its .onnx files into {dest}/), "
            f"or run `facelab models download {pack.name}` with network access."
        )
    if elsewhere:
        lines.append(elsewhere)
    return ModelNotFoundError("\n".join(lines))


def _local(urls: tuple[str, ...]) -> list[str]:
    return [u for u in urls if u.startswith("file:")]


def _why(download: bool) -> str:
    if not download:
        return "download=False was given, so nothing is downloaded"
    if is_offline():
        return "FACELAB_OFFLINE is set, so nothing is downloaded"
    return "it has no download URL"


def _downloadable(pack: PackCard, dest: Path, checks: list[FileCheck], *, local_only: bool) -> bool:
    """Whether the bad files in ``checks`` can be fetched (local_only: from ``file://`` URLs or an archive on disk)."""

    def usable(urls: tuple[str, ...]) -> bool:
        return bool(_local(urls)) if local_only else bool(urls)

    if pack.archive is not None:
        return usable(pack.urls) or (dest.parent / pack.archive.filename).is_file()
    bad = {c.filename for c in checks if not c.ok}
    return all(usable(card.urls) for card in pack.models if any(f.filename in bad for f in card.files))


def install_pack(
    pack: PackCard,
    *,
    home: PathLike | None = None,
    force: bool = False,
    progress: bool | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    keep_archive: bool = False,
    network: bool | None = None,
) -> Path:
    """Make ``$FACELAB_HOME/models/<pack>/`` hold every member of ``pack``, verified.

    Members already present with the pinned size and hash are kept (unless ``force``); missing
    or wrong ones are replaced from the pack archive (downloaded, verified, safely extracted into
    a temporary folder, members verified, then moved into place) or, for packs without an
    archive, downloaded one by one. The pack's licence is shown once before its first download.

    Args:
        pack: the pack card.
        home: facelab home (default ``$FACELAB_HOME`` or ``~/.facelab``).
        force: download again even when the folder verifies.
        progress: progress bar (``None`` = only on a terminal).
        retries: further tries per mirror, see :func:`~facelab.zoo._hub.download_file`.
        backoff: seconds before the first retry (doubled each time).
        keep_archive: keep the downloaded archive next to the pack folder.
        network: allow network downloads (default: unless ``FACELAB_OFFLINE`` is set). Without
            network, an archive already at ``<home>/models/<archive name>`` and ``file://`` URLs
            are still used.

    Returns:
        The pack folder.

    Raises:
        ModelNotFoundError: files are missing and cannot be fetched (offline, or no URL).
        ChecksumError / DownloadError: the download or an extracted member failed verification,
            or an archive member is unsafe.
    """
    dest = models_dir(pack.name, home)
    checks = _check(pack, dest, use_cache=True, home=home)
    if not force and all(c.ok for c in checks):
        return dest
    local_only = is_offline() if network is None else not network
    if not _downloadable(pack, dest, checks, local_only=local_only):
        raise _not_available(pack, dest, checks, _why(network is not False))
    present_bad = [c for c in checks if c.present and not c.ok]
    if present_bad:
        _logger.warning(
            "%s: pack folder %s is incomplete or corrupt (%s); repairing", pack.name, dest, _summary(checks)
        )
    ensure_license_accepted(pack, home)
    wanted = [c for c in checks if force or not c.ok]
    if pack.archive is None:
        for card in pack.models:
            for spec in card.files:
                if any(c.filename == spec.filename for c in wanted):
                    target = download_file(
                        _local(card.urls) if local_only else card.urls,
                        dest / spec.filename,
                        sha256=spec.sha256,
                        size=spec.size_bytes,
                        progress=progress,
                        retries=retries,
                        backoff=backoff,
                    )
                    if spec.sha256:
                        record_sha256(target, spec.sha256, home)
    else:
        _install_from_archive(
            pack,
            dest,
            [c.filename for c in wanted],
            home=home,
            progress=progress,
            retries=retries,
            backoff=backoff,
            keep_archive=keep_archive,
            force=force,
            local_only=local_only,
        )
    final = _check(pack, dest, use_cache=True, home=home)
    if not all(c.ok for c in final):
        raise DownloadError(f"{pack.name}: pack folder {dest} still incomplete after download: {_summary(final)}")
    _logger.info("%s: pack ready in %s", pack.name, dest)
    return dest


def _install_from_archive(
    pack: PackCard,
    dest: Path,
    filenames: list[str],
    *,
    home: PathLike | None,
    progress: bool | None,
    retries: int,
    backoff: float,
    keep_archive: bool,
    force: bool,
    local_only: bool,
) -> None:
    assert pack.archive is not None
    archive = dest.parent / pack.archive.filename
    # An archive already there (put by hand, or kept) is reused when it verifies; an unpinned one
    # is reused too, since its members are verified after extraction.
    pinned = pack.archive.sha256
    reuse = archive.is_file() and (not force or local_only) and (not pinned or sha256_file(archive) == pinned)
    if reuse:
        _logger.info("%s: using the archive already at %s", pack.name, archive)
    elif local_only and not _local(pack.urls):
        raise ChecksumError(
            f"{archive}: expected sha256 {pack.archive.sha256}, actual {sha256_file(archive)}; "
            "downloads are not allowed, so it cannot be replaced"
        )
    else:
        archive.unlink(missing_ok=True)
        download_file(
            _local(pack.urls) if local_only else pack.urls,
            archive,
            sha256=pack.archive.sha256,
            size=pack.archive.size_bytes,
            progress=progress,
            retries=retries,
            backoff=backoff,
        )
    specs = {s.filename: s for s in _specs(pack)}
    tmp = safe_extract_zip(archive, dest.parent)
    try:
        content = find_content_root(tmp, specs)
        verified: list[tuple[Path, str]] = []
        for name in filenames:
            spec = specs[name]
            src = content / name
            if not src.is_file():
                where = content.relative_to(tmp)
                raise DownloadError(f"{pack.archive.filename}: the archive has no member {name!r} (looked in {where})")
            size = src.stat().st_size
            digest = sha256_file(src)
            if (spec.size_bytes is not None and size != spec.size_bytes) or (spec.sha256 and digest != spec.sha256):
                if not pack.archive.sha256:
                    archive.unlink(missing_ok=True)  # unpinned archive: do not reuse a bad one
                raise ChecksumError(
                    f"{pack.archive.filename}: member {name}: expected sha256 {spec.sha256 or 'not pinned'} "
                    f"({spec.size_bytes} bytes), actual {digest} ({size} bytes)"
                )
            verified.append((src, digest))
        dest.mkdir(parents=True, exist_ok=True)
        for src, digest in verified:
            target = dest / src.name
            os.replace(src, target)
            record_sha256(target, digest, home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)


def _resolve_zoo(
    pack: PackCard, *, home: PathLike | None, download: bool, insightface_root: PathLike | None, progress: bool | None
) -> ResolvedPack:
    dest = models_dir(pack.name, home)
    checks = _check(pack, dest, use_cache=True, home=home)
    root, source = dest, "facelab"
    if not all(c.ok for c in checks):
        elsewhere = ""
        folder = _insightface_folder(pack, insightface_root)
        folder_checks = _check(pack, folder, use_cache=True, home=home) if folder else []
        if folder is not None and all(c.ok for c in folder_checks):
            root, source = folder, "insightface"
            _logger.info("%s: using the InsightFace folder %s (all members verified)", pack.name, folder)
        else:
            if folder is not None:
                elsewhere = f"The InsightFace folder {folder} was not used: {_summary(folder_checks)}."
                _logger.warning("%s: not using %s: %s", pack.name, folder, _summary(folder_checks))
            local_only = not download or is_offline()
            if not _downloadable(pack, dest, checks, local_only=local_only):
                raise _not_available(pack, dest, checks, _why(download), elsewhere)
            install_pack(pack, home=home, progress=progress, network=not local_only)
            source = "download"
    models = [(card, root / card.files[0].filename) for card in pack.models]
    models.sort(key=lambda item: item[0].task != "detection")
    return ResolvedPack(pack.name, root, models, card=pack, source=source)


def identify_model(path: PathLike, *, home: PathLike | None = None, tag: str | None = None) -> ModelCard:
    """The card of one ONNX file.

    In order: a card JSON beside the file (``<stem>.json``, as ``facelab train export`` writes it)
    whose recorded SHA-256 matches the file; a registered card with the same SHA-256; else a card
    classified from the file's input/output signature.

    Args:
        path: the ``.onnx`` file.
        home: facelab home (holds the hash cache).
        tag: tag for a classified card's name (default: the parent folder's name).

    Raises:
        ModelError: the file is missing, corrupt, or of an unrecognised signature (the message
            names the file and its inputs/outputs).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    digest = cached_sha256(path, home)
    beside = path.with_suffix(".json")
    if beside.is_file():
        try:
            own = ModelCard.load(beside)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{beside}: not a facelab model card: {exc}") from exc
        pinned = next((f.sha256 for f in own.files if f.filename == path.name), "")
        if pinned == digest:
            _logger.info("%s: card read from %s", path.name, beside.name)
            return own
        _logger.warning("%s: ignoring %s, whose sha256 does not match the file", path.name, beside.name)
    known = cards_by_sha256(digest)
    if known:
        same_name = [c for c in known if any(f.filename == path.name for f in c.files)]
        card = (same_name or known)[0]
        _logger.info("%s: identified by sha256 as %s", path.name, card.name)
        return card
    sig = read_signature(path)
    card = classify_signature(sig, path, sha256=digest, size=path.stat().st_size, tag=tag or path.parent.name)
    _logger.info("%s: classified by signature as %s (%s)", path.name, card.task, card.arch)
    return card


def resolve_folder(folder: PathLike, *, home: PathLike | None = None, strict: bool = True) -> ResolvedPack:
    """Identify the ONNX files of a user folder and pick one model per task, as InsightFace does.

    Files are taken in filename order; the first model of each task wins, later ones go to
    :attr:`ResolvedPack.extras`, as do face swappers (which would break InsightFace's pack
    loading). A single wrapping sub-folder (``pack/pack/*.onnx``) is unwrapped.

    Args:
        folder: a folder of ``.onnx`` files.
        home: facelab home (hash cache).
        strict: raise on an unrecognised or corrupt file; ``False`` skips it with a warning.

    Raises:
        ModelError: no ``.onnx`` files, an unusable file (with ``strict``), or no detector.
    """
    folder = Path(folder).expanduser()
    root = find_content_root(folder)
    files = sorted(root.glob("*.onnx"), key=lambda p: p.name)
    if not files:
        raise ModelError(f"{folder}: no .onnx files in this folder")
    result = ResolvedPack(folder.name, root, [], source="folder")
    taken: set[str] = set()
    for path in files:
        try:
            card = identify_model(path, home=home, tag=folder.name)
        except ModelError as exc:
            if strict:
                raise
            _logger.warning("skipping %s", exc)
            result.skipped.append((path, str(exc)))
            continue
        if card.task == "swap":
            _logger.info("%s: face-swap model, kept aside (not part of face analysis)", path.name)
            result.extras.append((card, path))
        elif card.task in taken:
            _logger.info(
                "%s: a %s model was already found; InsightFace keeps the first, so this one is unused",
                path.name,
                card.task,
            )
            result.extras.append((card, path))
        else:
            taken.add(card.task)
            result.models.append((card, path))
    if "detection" not in taken:
        found = ", ".join(f"{p.name}={c.task}" for c, p in result.models + result.extras) or "nothing usable"
        raise ModelError(
            f"{folder}: no face detector in this folder (found: {found}); add a detection model such as det_10g.onnx"
        )
    result.models.sort(key=lambda item: item[0].task != "detection")
    return result


def resolve_pack(
    name_or_dir: PathLike,
    *,
    home: PathLike | None = None,
    download: bool = True,
    insightface_root: PathLike | None = None,
    progress: bool | None = None,
    strict: bool = True,
) -> ResolvedPack:
    """Locate (and if needed download) a model pack and identify its models.

    Args:
        name_or_dir: a registered pack name (``"buffalo_l"``), a folder of ONNX files, or the
            name of a custom pack folder under ``<insightface root>/models/``.
        home: facelab home (default ``$FACELAB_HOME`` or ``~/.facelab``).
        download: allow downloading a missing or damaged zoo pack (``FACELAB_OFFLINE=1`` also forbids it).
        insightface_root: InsightFace's storage root (default ``$INSIGHTFACE_HOME`` or ``~/.insightface``).
        progress: download progress bar (``None`` = only on a terminal).
        strict: for folders, raise on an unusable ``.onnx`` file instead of skipping it.

    Returns:
        The :class:`ResolvedPack`; its models are ``(card, path)`` pairs, detection first.

    Raises:
        ModelNotFoundError: unknown name, or files missing while downloads are not allowed (the
            message names each file, its SHA-256 and the path to put it at).
        ModelError: a user folder without a detector or with an unusable file.
        DownloadError / ChecksumError: the download failed.
    """
    if isinstance(name_or_dir, str) and name_or_dir in list_packs():
        builder = pack_builder(name_or_dir)
        if builder is not None:
            return builder(home)
        return _resolve_zoo(
            get_pack(name_or_dir), home=home, download=download, insightface_root=insightface_root, progress=progress
        )
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return resolve_folder(path, home=home, strict=strict)
    if isinstance(name_or_dir, str) and "/" not in name_or_dir and os.sep not in name_or_dir:
        custom = insightface_home(insightface_root) / "models" / name_or_dir
        if custom.is_dir():
            _logger.info("using the custom InsightFace pack folder %s", custom)
            return resolve_folder(custom, home=home, strict=strict)
    raise ModelNotFoundError(
        f"{name_or_dir!s}: neither a known model pack ({', '.join(list_packs())}) nor a folder of ONNX files"
    )


def download_pack(
    name: str, force: bool = False, progress: bool | None = None, *, home: PathLike | None = None
) -> Path:
    """Download (or repair) a zoo pack into ``$FACELAB_HOME/models/<name>/``; the CLI's ``models download``.

    Returns:
        The pack folder. See :func:`install_pack` for the errors.
    """
    return install_pack(get_pack(name), home=home, force=force, progress=progress)


def verify_pack(name: str, *, home: PathLike | None = None, insightface_root: PathLike | None = None) -> PackReport:
    """Re-hash every member of an installed pack; the CLI's ``models verify``.

    Checks the facelab folder when any member is there, else the InsightFace folder when it
    exists, else reports every member missing from the facelab folder. Hashes are always
    recomputed (the hash cache is refreshed, not trusted).
    """
    pack = get_pack(name)
    dest = models_dir(pack.name, home)
    root, location = dest, "facelab"
    if not any((dest / s.filename).is_file() for s in _specs(pack)):
        folder = _insightface_folder(pack, insightface_root)
        if folder is not None:
            root, location = folder, "insightface"
    checks = _check(pack, root, use_cache=False, home=home)
    for c in checks:
        if c.sha256:
            record_sha256(c.path, c.sha256, home)
    return PackReport(pack.name, root, location, checks)


def pack_info(
    name: str, *, home: PathLike | None = None, insightface_root: PathLike | None = None, hashes: bool = False
) -> dict[str, Any]:
    """Everything about a zoo pack for the CLI's ``models info`` / ``models list``.

    Args:
        name: pack name.
        home: facelab home.
        insightface_root: InsightFace's storage root.
        hashes: also check SHA-256 (cached per unchanged file); default checks presence and size only.

    Returns:
        The pack card as a dict plus ``"installed"`` (``location``, ``root``, ``complete``, per-file
        ``files``), ``"license_accepted"`` (the recorded acceptance or ``None``), ``"total_bytes"``
        (unpacked size when every size is pinned) and ``"model_names"``.
    """
    pack = get_pack(name)
    info = pack.to_dict()

    def quick(folder: Path) -> list[FileCheck]:
        if hashes:
            return _check(pack, folder, use_cache=True, home=home)
        return [check_file(spec, folder / spec.filename, hashes=False) for spec in _specs(pack)]

    dest = models_dir(pack.name, home)
    checks, location, root = quick(dest), "facelab", dest
    if not any(c.present for c in checks):
        folder = _insightface_folder(pack, insightface_root)
        if folder is not None:
            checks, location, root = quick(folder), "insightface", folder
    if not any(c.present for c in checks):
        location = "none"
    record = license_record_path(pack.name, home)
    accepted = None
    if record.is_file():
        import json

        try:
            accepted = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            accepted = {"path": str(record)}
    sizes = [s.size_bytes for s in _specs(pack)]
    info.update(
        {
            "model_names": [m.name for m in pack.models],
            "tasks": [m.task for m in pack.models],
            "total_bytes": sum(sizes) if all(sizes) else None,  # type: ignore[arg-type]
            "installed": {
                "location": location,
                "root": str(root),
                "complete": all(c.ok for c in checks),
                "files": [{"filename": c.filename, "present": c.present, "size": c.size, "ok": c.ok} for c in checks],
            },
            "license_accepted": accepted,
            "home": str(facelab_home(home)),
        }
    )
    return info
