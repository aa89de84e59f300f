"""``facelab.client``: a small typed Python client for ``facelab serve`` (standard library only).

Example:
    >>> from facelab.client import Client                          # doctest: +SKIP
    >>> c = Client("http://127.0.0.1:8000", api_key="flk_...")      # doctest: +SKIP
    >>> [f.box for f in c.detect("group.jpg")]                      # doctest: +SKIP

Images are paths or encoded bytes. Errors raise :class:`ServiceError` subclasses carrying the
server's ``code``, ``message``, ``details`` and ``request_id``.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError

__all__ = [
    "Client",
    "ServiceError",
    "AuthError",
    "NotFound",
    "Conflict",
    "InvalidRequest",
    "RateLimited",
    "Unavailable",
    "ClientFace",
    "Comparison",
    "Embedding",
]


class ServiceError(FacelabError):
    """An error answered by the service (or a transport failure, with ``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, request_id: str = "") -> None:
        super().__init__(f"{message} ({code}, HTTP {status}, request {request_id or '-'})")
        self.status, self.code, self.message = status, code, message
        self.details, self.request_id = dict(details or {}), request_id


class AuthError(ServiceError):
    """401 or 403: no key, a wrong or revoked key, or a key without the needed scope."""


class NotFound(ServiceError):
    """404."""


class Conflict(ServiceError):
    """409."""


class InvalidRequest(ServiceError):
    """400, 413, 415 or 422: the request or an image was refused."""


class RateLimited(ServiceError):
    """429; ``retry_after`` seconds."""

    retry_after: float = 1.0


class Unavailable(ServiceError):
    """503 (not ready, overloaded, feature off); ``retry_after`` seconds when the server sent one."""

    retry_after: float | None = None


_BY_STATUS = {401: AuthError, 403: AuthError, 404: NotFound, 409: Conflict, 429: RateLimited, 503: Unavailable}


@dataclass(frozen=True)
class ClientFace:
    """One face as the service returns it (pixels; see :mod:`facelab.serve.schemas`)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: list[list[float]] | None
    quality: dict[str, Any] | None
    attributes: dict[str, Any] = field(default_factory=dict)
    embedding: list[float] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientFace:
        """Parse one face object."""
        b = data["box"]
        return cls(
            (b["x1"], b["y1"], b["x2"], b["y2"]),
            float(data["score"]),
            data.get("landmarks"),
            data.get("quality"),
            dict(data.get("attributes") or {}),
            data.get("embedding"),
        )


@dataclass(frozen=True)
class Comparison:
    """``compare`` result."""

    similarity: float
    threshold: float | None
    matched: bool | None
    source_face: ClientFace
    target_face: ClientFace


@dataclass(frozen=True)
class Embedding:
    """``embedding`` result: an L2-normalised vector and the model that made it."""

    vector: list[float]
    model: str | None
    face: ClientFace


def _image_part(image: str | os.PathLike | bytes) -> tuple[str, bytes]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "image", bytes(image)
    path = Path(image)
    return path.name, path.read_bytes()


def _multipart(files: dict[str, Any], fields: dict[str, Any]) -> tuple[bytes, str]:
    boundary = "facelab" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields.items():
        if value is None:
            continue
        text = (
            json.dumps(value)
            if isinstance(value, (dict, list))
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{text}\r\n'.encode()
    for name, items in files.items():
        for filename, data in items if isinstance(items, list) else [items]:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            out += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class Client:
    """Talk to one service.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: a key from ``facelab serve keys create`` (``None`` when auth is off).
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # transport ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        files: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Any:
        """One call; returns the parsed JSON (or bytes with ``raw``), raises :class:`ServiceError`."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if files is not None or fields is not None:
            data, headers["Content-Type"] = _multipart(files or {}, fields or {})
        elif json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
                if raw:
                    return body
                return json.loads(body) if body else None
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(0, "unreachable", f"cannot reach {self.base_url}: {exc}") from exc

    @staticmethod
    def _error(exc: urllib.error.HTTPError) -> ServiceError:
        try:
            body = json.loads(exc.read() or b"{}")
            err = body.get("error") or {}
            code, message, details, rid = (
                err.get("code", "http_error"),
                err.get("message", ""),
                err.get("details"),
                body.get("request_id", ""),
            )
        except ValueError:
            code, message, details, rid = "http_error", exc.reason or "", None, ""
        kind = _BY_STATUS.get(exc.code, InvalidRequest if 400 <= exc.code < 500 else ServiceError)
        error = kind(exc.code, code, message, details, rid)
        retry = exc.headers.get("Retry-After") if exc.headers else None
        if retry is not None and isinstance(error, (RateLimited, Unavailable)):
            error.retry_after = float(retry)
        return error

    # system ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``."""
        return self.request("GET", "/v1/health")

    def system(self) -> dict[str, Any]:
        """``GET /v1/system`` (admin key)."""
        return self.request("GET", "/v1/system")

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        return self.request("GET", "/v1/models")

    # faces ----------------------------------------------------------------------------------

    def detect(self, image: str | os.PathLike | bytes, max_faces: int = 100) -> list[ClientFace]:
        """Faces of one image, largest first."""
        body = self.request("POST", "/v1/detect", files={"image": _image_part(image)}, fields={"max_faces": max_faces})
        return [ClientFace.from_json(f) for f in body["faces"]]

    def analyze(self, image: str | os.PathLike | bytes, embeddings: bool = False) -> list[ClientFace]:
        """Every model of the pack on every face."""
        body = self.request(
            "POST", "/v1/analyze", files={"image": _image_part(image)}, fields={"embeddings": embeddings}
        )
        return [ClientFace.from_json(f) for f in body["faces"]]

    def compare(
        self, source: str | os.PathLike | bytes, target: str | os.PathLike | bytes, threshold: float | None = None
    ) -> Comparison:
        """1:1 comparison of the largest face of each image."""
        body = self.request(
            "POST",
            "/v1/compare",
            files={"source": _image_part(source), "target": _image_part(target)},
            fields={"threshold": threshold},
        )
        return Comparison(
            body["similarity"],
            body["threshold"],
            body["matched"],
            ClientFace.from_json(body["source_face"]),
            ClientFace.from_json(body["target_face"]),
        )

    def embedding(self, image: str | os.PathLike | bytes) -> Embedding:
        """The normalised embedding of the largest face."""
        body = self.request("POST", "/v1/embeddings", files={"image": _image_part(image)})
        return Embedding(body["embedding"], body["model"], ClientFace.from_json(body["face"]))

    def swap(self, target: str | os.PathLike | bytes, source: str | os.PathLike | bytes) -> bytes:
        """JPEG bytes of ``target`` with ``source``'s identity swapped in (server needs --swap-model)."""
        return self.request(
            "POST", "/v1/swap", files={"target": _image_part(target), "source": _image_part(source)}, raw=True
        )

    # gallery --------------------------------------------------------------------------------

    def create_collection(self, collection_id: str, **fields: Any) -> dict[str, Any]:
        """Create a collection (``threshold``, ``save_face_crops``, ``metadata``)."""
        return self.request("POST", "/v1/collections", json_body={"id": collection_id, **fields})

    def collections(self) -> list[dict[str, Any]]:
        """Every collection (follows the cursors)."""
        return self._all("/v1/collections", "collections")

    def collection(self, collection_id: str) -> dict[str, Any]:
        """One collection."""
        return self.request("GET", f"/v1/collections/{_q(collection_id)}")

    def update_collection(self, collection_id: str, **changes: Any) -> dict[str, Any]:
        """Change ``threshold``, ``save_face_crops`` or ``metadata``."""
        return self.request("PATCH", f"/v1/collections/{_q(collection_id)}", json_body=changes)

    def delete_collection(self, collection_id: str, force: bool = False) -> None:
        """Delete a collection (``force`` when it has persons)."""
        self.request("DELETE", f"/v1/collections/{_q(collection_id)}", params={"force": str(force).lower()})

    def enroll(
        self,
        collection_id: str,
        name: str,
        images: list[str | os.PathLike | bytes],
        *,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        review_mode: str = "standard",
    ) -> dict[str, Any]:
        """Create a person from 1-20 photos; returns the person, accepted and rejected images."""
        return self.request(
            "POST",
            f"/v1/collections/{_q(collection_id)}/persons",
            files={"images": [_image_part(i) for i in images]},
            fields={"name": name, "external_id": external_id, "metadata": metadata, "review_mode": review_mode},
        )

    def add_faces(self, collection_id: str, person_id: int, images: list[str | os.PathLike | bytes]) -> dict[str, Any]:
        """Add photos to a person."""
        return self.request(
            "POST",
            f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}/faces",
            files={"images": [_image_part(i) for i in images]},
        )

    def persons(self, collection_id: str, search: str | None = None) -> list[dict[str, Any]]:
        """Every person of a collection (follows the cursors)."""
        return self._all(f"/v1/collections/{_q(collection_id)}/persons", "persons", {"search": search})

    def person(self, collection_id: str, person_id: int) -> dict[str, Any]:
        """One person."""
        return self.request("GET", f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}")

    def update_person(self, collection_id: str, person_id: int, **changes: Any) -> dict[str, Any]:
        """Change ``name``, ``external_id`` or ``metadata``."""
        return self.request("PATCH", f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}", json_body=changes)

    def delete_person(self, collection_id: str, person_id: int) -> None:
        """Delete a person and all their face data."""
        self.request("DELETE", f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}")

    def merge_persons(self, collection_id: str, into: int, others: list[int]) -> dict[str, Any]:
        """Move the faces of ``others`` to ``into``."""
        return self.request(
            "POST", f"/v1/collections/{_q(collection_id)}/persons/{int(into)}/merge", json_body={"others": others}
        )

    def faces(self, collection_id: str, person_id: int) -> list[dict[str, Any]]:
        """A person's stored faces."""
        path = f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}/faces"
        return self.request("GET", path)["faces"]

    def face_image(self, collection_id: str, person_id: int, face_id: int) -> bytes:
        """A stored face crop (JPEG bytes)."""
        path = f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}/faces/{int(face_id)}/image"
        return self.request("GET", path, raw=True)

    def delete_face(self, collection_id: str, person_id: int, face_id: int) -> None:
        """Delete one stored face."""
        self.request("DELETE", f"/v1/collections/{_q(collection_id)}/persons/{int(person_id)}/faces/{int(face_id)}")

    def search(
        self, collection_id: str, image: str | os.PathLike | bytes, limit: int = 5, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """Who is in this photo: per face, its ``identity`` (or ``None``) and top ``matches``."""
        body = self.request(
            "POST",
            f"/v1/collections/{_q(collection_id)}/search",
            files={"image": _image_part(image)},
            fields={"limit": limit, "threshold": threshold},
        )
        return body["faces"]

    def _all(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = self.request("GET", path, params={**(params or {}), "limit": 100, "cursor": cursor})
            out += body[key]
            cursor = body.get("next_cursor")
            if not cursor:
                return out


def _q(text: str) -> str:
    return urllib.parse.quote(str(text), safe="")
