"""The service's error contract: one envelope, request ids, and the status codes InsightFace Server uses.

Every error response is ``{"error": {"code", "message", "details"}, "request_id"}`` with the same
id in the ``x-request-id`` header. Codes and statuses:

====  =========================================================================================
400   ``invalid_request``, ``invalid_image``, ``invalid_cursor``
401   ``unauthorized`` (no key), ``invalid_api_key`` (unknown or revoked key)
403   ``forbidden`` (the key lacks the scope)
404   ``not_found``, ``collection_not_found``, ``person_not_found``, ``face_not_found_id``, ``job_not_found``
405   ``method_not_allowed``
409   ``conflict``, ``collection_exists``, ``collection_not_empty``, ``collection_model_mismatch``
413   ``request_too_large``, ``image_too_large``, ``too_many_images``
415   ``unsupported_media_type``
422   ``validation_error``, ``face_not_found`` (no face in an image), ``registration_failed``
429   ``rate_limited``
500   ``internal_error`` (details never leak internals; the log has them under the request id)
503   ``not_ready``, ``overloaded``, ``model_unavailable``, ``feature_unavailable``
====  =========================================================================================
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facelab.errors import ConfigError, FacelabError, ImageError, ImageTooLargeError, ModelError

__all__ = [
    "ApiError",
    "install_error_handlers",
    "RequestIdMiddleware",
    "envelope",
    "request_id_of",
    "scope_request_id",
    "send_envelope",
    "RECENT_ERRORS",
]

_logger = logging.getLogger("facelab.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

#: The last error codes answered (for ``/v1/system``): ``(status, code, path)``, no messages.
RECENT_ERRORS: deque[tuple[int, str, str]] = deque(maxlen=20)


class ApiError(Exception):
    """An error answered with the envelope.

    Args:
        status: HTTP status.
        code: machine-readable code (see the module table).
        message: one readable sentence.
        details: JSON-safe extra data (never secrets).
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def scope_request_id(scope: Mapping[str, Any]) -> str:
    """The request id :class:`RequestIdMiddleware` put in an ASGI ``scope`` (``"-"`` before it ran)."""
    return scope.get("state", {}).get("request_id") or "-"


def request_id_of(request: Request) -> str:
    """The request id the middleware attached to ``request``."""
    return scope_request_id(request.scope)


def envelope(code: str, message: str, details: Mapping[str, Any] | None, request_id: str) -> dict[str, Any]:
    """The error body."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}, "request_id": request_id}


def _answered(error: ApiError, path: str, request_id: str) -> dict[str, Any]:
    """The envelope of ``error``, noted in :data:`RECENT_ERRORS`."""
    RECENT_ERRORS.append((error.status, error.code, path))
    return envelope(error.code, error.message, error.details, request_id)


async def send_envelope(send: Any, scope: dict, error: ApiError) -> None:
    """Answer an ASGI request with ``error``'s envelope (for middleware, outside FastAPI's handlers)."""
    import json

    body = json.dumps(_answered(error, scope.get("path", ""), scope_request_id(scope))).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _respond(request: Request, error: ApiError) -> JSONResponse:
    body = _answered(error, request.url.path, request_id_of(request))
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    problems = []
    for err in exc.errors()[:20]:
        loc = [str(p) for p in err.get("loc", ())]
        problems.append({"field": ".".join(loc), "problem": str(err.get("msg", ""))[:200]})
    return {"problems": problems}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise onto the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        return _respond(request, ApiError(422, "validation_error", "the request is not valid", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _respond(request, ApiError(404, "not_found", f"no route {request.url.path}"))
        if exc.status_code == 405:
            return _respond(request, ApiError(405, "method_not_allowed", f"{request.method} is not allowed here"))
        return _respond(request, ApiError(exc.status_code, "http_error", str(exc.detail)[:200]))

    @app.exception_handler(ImageTooLargeError)
    async def _too_large(request: Request, exc: ImageTooLargeError) -> JSONResponse:
        return _respond(request, ApiError(413, "image_too_large", str(exc)[:300]))

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError) -> JSONResponse:
        return _respond(request, ApiError(400, "invalid_image", str(exc)[:300]))

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return _respond(request, ApiError(422, "validation_error", str(exc)[:300]))

    @app.exception_handler(ModelError)
    async def _model(request: Request, exc: ModelError) -> JSONResponse:
        _logger.error("request %s: model error: %s", request_id_of(request), exc)
        return _respond(request, ApiError(503, "model_unavailable", "a model needed for this request is unavailable"))

    @app.exception_handler(FacelabError)
    async def _facelab(request: Request, exc: FacelabError) -> JSONResponse:
        return _respond(request, ApiError(400, "invalid_request", str(exc)[:300]))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        _logger.exception("request %s: internal error", request_id_of(request))
        return _respond(request, ApiError(500, "internal_error", "internal error; the server log has the details"))


class RequestIdMiddleware:
    """Give every request an id (a sane client ``x-request-id`` is kept) and echo it in the response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
                break
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
