"""Who may call what: one table of route rules, checked before a request body is read.

Rules (first match wins): the health route, the web page and its assets and the OpenAPI document
are public; ``/v1/system`` and ``/metrics`` need ``admin``; ``GET``/``HEAD`` need ``read``; the
compute routes that change nothing (detect, analyze, compare, embeddings, liveness, swap, search) need
``read``; every other method needs ``write``. Keys come as ``Authorization: Bearer <key>`` or
``x-api-key: <key>``. Missing → 401 ``unauthorized``; unknown or revoked → 401 ``invalid_api_key``;
too weak → 403 ``forbidden``; over the per-key rate → 429 ``rate_limited``.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from facelab.serve.auth import KeyStore, scope_allows
from facelab.serve.errors import ApiError, send_envelope

__all__ = ["required_scope", "AuthMiddleware", "PUBLIC_PATHS"]

#: Paths anyone may read.
PUBLIC_PATHS = ("/v1/health", "/", "/index.html", "/openapi.json", "/favicon.ico")
_PUBLIC_PREFIXES = ("/assets/",)
_ADMIN = ("/v1/system", "/metrics")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_READ_POSTS = re.compile(r"^/v1/(detect|analyze|compare|embeddings|liveness|swap|collections/[^/]+/search)$")


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs, or ``None`` for a public one.

    Example:
        >>> required_scope("GET", "/v1/health"), required_scope("POST", "/v1/detect")
        (None, 'read')
        >>> required_scope("DELETE", "/v1/collections/c/persons/p"), required_scope("GET", "/v1/system")
        ('write', 'admin')
    """
    if path in PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES):
        return None
    if path in _ADMIN:
        return "admin"
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    if method == "POST" and _READ_POSTS.match(path):
        return "read"
    return "write"


class _Buckets:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._state[key] = (tokens, now)
                return False
            self._state[key] = (tokens - 1.0, now)
            return True


class AuthMiddleware:
    """Check API keys by :func:`required_scope`; the key record goes to ``scope["state"]["api_key"]``."""

    def __init__(self, app: Any, keys: KeyStore, enabled: bool, rate_limit: float, retry_after_s: int) -> None:
        self.app = app
        self.keys = keys
        self.enabled = enabled
        self.buckets = _Buckets(rate_limit) if rate_limit > 0 else None
        self.retry_after = str(retry_after_s)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http" or not self.enabled or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        need = required_scope(scope["method"], scope["path"])
        if need is None:
            await self.app(scope, receive, send)
            return
        presented = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    presented = text[7:].strip()
            elif key == b"x-api-key" and presented is None:
                presented = value.decode("latin-1").strip()
        if not presented:
            error = ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer)", None, _CHALLENGE)
            await send_envelope(send, scope, error)
            return
        record = self.keys.verify(presented)
        if record is None:
            error = ApiError(401, "invalid_api_key", "the API key is unknown or revoked", None, _CHALLENGE)
            await send_envelope(send, scope, error)
            return
        if not scope_allows(record.scope, need):
            message = f"this key has scope {record.scope!r}; the request needs {need!r}"
            error = ApiError(403, "forbidden", message, {"scope": record.scope, "needed": need})
            await send_envelope(send, scope, error)
            return
        if self.buckets is not None and not self.buckets.take(record.key_id):
            error = ApiError(
                429, "rate_limited", "too many requests for this key", None, {"Retry-After": self.retry_after}
            )
            await send_envelope(send, scope, error)
            return
        scope.setdefault("state", {})["api_key"] = record
        await self.app(scope, receive, send)
