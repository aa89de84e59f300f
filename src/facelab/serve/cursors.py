"""Opaque, signed pagination cursors: clients cannot forge or edit them.

A cursor is ``base64url(json(payload)) + "." + base64url(hmac_sha256(key, that))``. The key (32
random bytes) lives in ``<data_dir>/cursor.key``, created on first use with mode 0600, so cursors
stay valid across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from facelab.convert.cache import atomic_write

__all__ = ["CursorSigner"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Sign and check cursors.

    Example:
        >>> signer = CursorSigner(key=b"k" * 32)
        >>> token = signer.sign({"after": 41, "list": "persons"})
        >>> signer.verify(token, "persons")
        {'after': 41, 'list': 'persons'}
        >>> signer.verify(token[:-2] + "xx", "persons") is None
        True
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, key: bytes | None = None) -> None:
        if key is None:
            if data_dir is None:
                raise ValueError("CursorSigner needs data_dir or key")
            path = Path(data_dir) / "cursor.key"
            if not path.is_file():
                atomic_write(path, secrets.token_bytes(32))
                os.chmod(path, 0o600)
            key = path.read_bytes()
        self._key = key

    def sign(self, payload: dict[str, Any]) -> str:
        """A cursor for ``payload`` (JSON-safe)."""
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        mac = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        return f"{body}.{mac}"

    def verify(self, token: str, list_name: str) -> dict[str, Any] | None:
        """The payload of a valid cursor for the list ``list_name``, else ``None``."""
        if not token or len(token) > 1000 or "." not in token:
            return None
        body, mac = token.rsplit(".", 1)
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("list") != list_name:
            return None
        return payload
