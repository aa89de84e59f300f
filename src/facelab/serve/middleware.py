"""ASGI middleware of the service: body size limit, access log + metrics, security headers.

All three are plain ASGI (no buffering of bodies). The body limit refuses a request whose
``Content-Length`` is over the limit before reading a byte, and stops a chunked body as soon as it
passes the limit (413 ``request_too_large`` either way), so a huge upload is never decoded.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from facelab.serve.errors import ApiError, scope_request_id, send_envelope
from facelab.serve.metrics import ServiceMetrics

__all__ = ["BodyLimitMiddleware", "AccessLogMiddleware", "SecurityHeadersMiddleware", "CSP", "JsonLogFormatter"]

_access = logging.getLogger("facelab.serve.access")

#: Content Security Policy of every response: same-origin scripts, styles, images and calls only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class _BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "request_too_large", f"request body over the limit of {limit} bytes", {"limit": limit})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await send_envelope(send, scope, ApiError(400, "invalid_request", "bad Content-Length header"))
                    return
                if length > self.max_bytes:
                    message = f"request body of {length} bytes is over the limit of {self.max_bytes}"
                    error = ApiError(413, "request_too_large", message, {"limit": self.max_bytes})
                    await send_envelope(send, scope, error)
                    return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class AccessLogMiddleware:
    """Log one line per request (never headers or query strings) and count it in the metrics."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(template).observe(elapsed)
            _access.info(
                "request",
                extra={
                    "request_id": scope_request_id(scope),
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )


class SecurityHeadersMiddleware:
    """Add CSP and the usual hardening headers to every response."""

    _HEADERS = [
        (b"content-security-policy", CSP.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", ())) + self._HEADERS}
            await send(message)

        await self.app(scope, receive, add)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and the structured extras."""

    _FIELDS = ("request_id", "method", "route", "status", "ms")

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102 - logging protocol
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in self._FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
