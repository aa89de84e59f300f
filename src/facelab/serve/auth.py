"""API keys: random secrets shown once, stored as scrypt digests with scopes; revocation.

A key reads ``flk_<key id>_<secret>``: the id (8 hex digits) finds the record, the secret (32
random bytes, URL-safe base64) is checked against the stored ``scrypt(secret, salt, n=2**14, r=8,
p=1)`` digest in constant time. Only digests are stored, in ``<data_dir>/keys.json`` (written
atomically, mode 0600). Scopes are ordered: ``read`` < ``write`` < ``admin``; a key has one scope and
everything below it. Verified keys are remembered in memory by the SHA-256 of the whole key, so
scrypt runs once per key and process; the file is re-read when it changes (a revocation made
with the CLI takes effect at the next request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facelab.convert.cache import atomic_write
from facelab.errors import ConfigError

__all__ = ["ApiKey", "KeyStore", "SCOPES", "scope_allows"]

#: Scopes from least to most privileged.
SCOPES = ("read", "write", "admin")

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_PREFIX = "flk_"


def scope_allows(have: str, need: str) -> bool:
    """Whether a key of scope ``have`` may do what needs ``need``.

    Example:
        >>> scope_allows("write", "read"), scope_allows("read", "write")
        (True, False)
    """
    return SCOPES.index(have) >= SCOPES.index(need)


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never the secret).

    Attributes:
        key_id: 8 hex digits, public.
        name: label given at creation.
        scope: ``read``, ``write`` or ``admin``.
        created_at: Unix time.
        revoked_at: Unix time of revocation, or ``None`` while active.
        salt: hex salt of the digest.
        digest: hex scrypt digest of the secret.
    """

    key_id: str
    name: str
    scope: str
    created_at: float
    revoked_at: float | None
    salt: str
    digest: str

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """The fields safe to list (no salt, no digest)."""
        return {k: v for k, v in asdict(self).items() if k not in ("salt", "digest")} | {"active": self.active}


def _digest(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, maxmem=64 * 1024 * 1024, **_SCRYPT).hex()


class KeyStore:
    """The keys of one service, in ``<data_dir>/keys.json``.

    Args:
        data_dir: folder of the keys file (created when a key is created).
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / "keys.json"
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._verified: dict[str, str] = {}  # sha256(whole key) -> key id

    # file -----------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._keys, self._stamp, self._verified = {}, None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8"))["keys"]
            keys = {row["key_id"]: ApiKey(**row) for row in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a facelab API keys file ({exc})") from exc
        self._keys, self._stamp, self._verified = keys, stamp, {}

    def _save(self) -> None:
        data = json.dumps({"version": 1, "keys": [asdict(k) for k in self._keys.values()]}, indent=1).encode()
        atomic_write(self.path, data)
        os.chmod(self.path, 0o600)
        self._stamp = None

    # API ------------------------------------------------------------------------------------

    def create(self, name: str, scope: str = "read") -> tuple[str, ApiKey]:
        """Create a key; returns ``(secret_key, record)`` — the secret is not stored and cannot be shown again."""
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
        if not name or len(name) > 200:
            raise ConfigError("a key needs a name of 1 to 200 characters")
        with self._lock:
            self._load()
            key_id = secrets.token_hex(4)
            while key_id in self._keys:
                key_id = secrets.token_hex(4)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            salt = secrets.token_bytes(16)
            record = ApiKey(key_id, name, scope, time.time(), None, salt.hex(), _digest(secret, salt))
            self._keys[key_id] = record
            self._save()
        return f"{_PREFIX}{key_id}_{secret}", record

    def list(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self._lock:
            self._load()
            return sorted(self._keys.values(), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by id (idempotent)."""
        with self._lock:
            self._load()
            record = self._keys.get(key_id)
            if record is None:
                raise ConfigError(f"no API key with id {key_id!r}")
            if record.active:
                record = ApiKey(**{**asdict(record), "revoked_at": time.time()})
                self._keys[key_id] = record
                self._save()
            return record

    def has_active(self) -> bool:
        """Whether any active key exists."""
        return any(k.active for k in self.list())

    def verify(self, presented: str) -> ApiKey | None:
        """The active key matching ``presented``, or ``None``."""
        if not presented.startswith(_PREFIX) or len(presented) > 200:
            return None
        fingerprint = hashlib.sha256(presented.encode("utf-8")).hexdigest()
        with self._lock:
            self._load()
            known = self._verified.get(fingerprint)
            if known is not None:
                record = self._keys.get(known)
                return record if record is not None and record.active else None
            try:
                key_id, secret = presented[len(_PREFIX) :].split("_", 1)
            except ValueError:
                return None
            record = self._keys.get(key_id)
        if record is None or not record.active:
            return None
        ok = hmac.compare_digest(_digest(secret, bytes.fromhex(record.salt)), record.digest)
        if not ok:
            return None
        with self._lock:
            self._verified[fingerprint] = key_id
        return record
