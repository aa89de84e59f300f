"""Settings of ``facelab serve``: limits, security and concurrency, from arguments or the environment.

Every field can be set with an environment variable ``FACELAB_SERVE_<FIELD>`` (upper case), e.g.
``FACELAB_SERVE_MAX_IMAGE_BYTES=5242880`` or ``FACELAB_SERVE_CORS_ORIGINS=https://a.example,https://b.example``;
arguments given to :meth:`ServeSettings.from_env` win over the environment.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError
from facelab.zoo import facelab_home

__all__ = ["ServeSettings", "MIB"]

MIB = 1024 * 1024


def _default_data_dir() -> Path:
    return facelab_home() / "serve"


@dataclass(frozen=True)
class ServeSettings:
    """Configuration of one service process.

    Attributes:
        gallery: gallery URL (``sqlite:///path.db`` or ``postgresql://...``); default
            ``sqlite:///$FACELAB_HOME/serve/gallery.db``.
        pack: model pack (``None`` = facelab's default open pack).
        data_dir: folder for the API keys file (``keys.json``) and the cursor-signing key.
        auth: require an API key on every route but ``/v1/health`` (and the static page).
        cors_origins: origins allowed to call the API from a browser; empty = CORS denied.
        workers: inference worker threads sharing one set of model sessions.
        queue: requests allowed to wait for a worker; beyond ``workers + queue`` in flight the
            service answers 503 with ``Retry-After``.
        threads: ONNX Runtime intra-op threads per model call (1 lets the workers run in parallel).
        max_image_bytes: largest encoded image per upload (the Server's 10 MiB).
        max_request_bytes: largest request body (64 MiB).
        max_pixels: largest decoded image (40 MP).
        max_enroll_images: images per enrollment request (20).
        max_faces: most faces returned by ``/v1/detect`` (100).
        swap_model: path of an ``inswapper_128``-style model for ``/v1/swap`` (none = route disabled).
        library: photo-library folders that ``/v1/index`` jobs may index (by number; clients name
            folders inside them, never other server paths).
        liveness: load the liveness models (the ``liveness`` pack, downloaded on first use unless
            ``FACELAB_OFFLINE``) for ``/v1/liveness`` and ``face.liveness`` in ``/v1/analyze``.
        require_live: refuse spoofs: enrollment rejects them (``spoof_detected``) and search does not
            search them (implies ``liveness``).
        rate_limit: requests per second per API key (0 = unlimited); over it: 429.
        retry_after_s: the ``Retry-After`` seconds sent with 503 and 429.
        log_format: ``"text"`` or ``"json"``.
    """

    gallery: str = ""
    pack: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    auth: bool = True
    cors_origins: tuple[str, ...] = ()
    workers: int = field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 8)))
    queue: int = 16
    threads: int = 1
    max_image_bytes: int = 10 * MIB
    max_request_bytes: int = 64 * MIB
    max_pixels: int = 40_000_000
    max_enroll_images: int = 20
    max_faces: int = 100
    swap_model: Path | None = None
    library: tuple[Path, ...] = ()
    liveness: bool = False
    require_live: bool = False
    rate_limit: float = 0.0
    retry_after_s: int = 1
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.gallery:
            object.__setattr__(self, "gallery", f"sqlite:///{Path(self.data_dir) / 'gallery.db'}")
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "library", tuple(Path(p) for p in self.library))
        if self.require_live:
            object.__setattr__(self, "liveness", True)
        for name in ("workers", "max_image_bytes", "max_request_bytes", "max_pixels", "max_enroll_images", "max_faces"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"serve setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.queue < 0 or self.threads < 1 or self.rate_limit < 0 or self.retry_after_s < 0:
            raise ConfigError("serve settings queue, rate_limit and retry_after_s must be >= 0, threads >= 1")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"serve setting log_format must be 'text' or 'json', got {self.log_format!r}")
        if any(o == "*" for o in self.cors_origins) and self.auth:
            raise ConfigError("CORS origin '*' is refused while auth is on; list the allowed origins")

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Settings from ``FACELAB_SERVE_*`` variables, then ``overrides`` (``None`` values ignored)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"FACELAB_SERVE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"serve settings: {exc}") from exc

    def public(self) -> dict[str, Any]:
        """The settings safe to show in ``/v1/system`` (no secrets; the gallery URL without its password)."""
        out = dataclasses.asdict(self)
        out["gallery"] = redact_url(self.gallery)
        out["data_dir"] = str(self.data_dir)
        out["swap_model"] = None if self.swap_model is None else Path(self.swap_model).name
        out["cors_origins"] = list(self.cors_origins)
        out["library"] = [Path(p).name for p in self.library]
        return out


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``.

    Example:
        >>> redact_url("postgresql://bob:secret@db:5432/faces")
        'postgresql://bob:***@db:5432/faces'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("bool"):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("tuple[Path"):
            return tuple(Path(item) for item in raw.split(os.pathsep) if item)
        if kind.startswith("tuple"):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if kind.startswith("Path"):
            return Path(raw) if raw else None
    except ValueError as exc:
        raise ConfigError(f"FACELAB_SERVE_{f.name.upper()}={raw!r}: {exc}") from exc
    return raw or None
