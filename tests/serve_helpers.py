"""Helpers for the service tests: a real ``facelab serve`` process on loopback, an in-process app, keys, photos.

``serve_client`` runs ``create_app`` in FastAPI's ``TestClient`` (lifespan started, ready, with a key).
``ServerProcess`` starts the installed console script (the same entry point a user runs) on a free
port with its own data folder and gallery file, waits for ``/v1/health`` to say ready, and can be
stopped politely or killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cli_helpers import script_command
from shared_data import shared_file

__all__ = ["free_port", "ServerProcess", "photo", "serve_client"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(relative: str) -> bytes:
    """The bytes of a shared photo (``data/...``)."""
    return Path(shared_file(relative)).read_bytes()


@contextmanager
def serve_client(settings: Any, analyzer: Any, scope: str = "write") -> Iterator[Any]:
    """``create_app(settings, analyzer=analyzer)`` in a ``TestClient`` that sends a fresh key of ``scope``.

    Server errors come back as responses (``raise_server_exceptions=False``); the client is handed out
    once ``/v1/health`` answers 200 (or after 30 s of asking).
    """
    from fastapi.testclient import TestClient

    from facelab.serve import create_app

    app = create_app(settings, analyzer=analyzer)
    secret = app.state.facelab.keys.create("t", scope)[0]
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(600):
            if client.get("/v1/health").status_code == 200:
                break
            time.sleep(0.05)
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


class ServerProcess:
    """One ``facelab serve`` process.

    Args:
        data_dir: its data folder (keys, cursor key, default gallery).
        args: extra command-line arguments.
        env: extra environment.
        port: the port to listen on (default: a free one).
    """

    def __init__(
        self,
        data_dir: Path,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args or [])
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 180.0) -> ServerProcess:
        """Start and wait until ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*script_command(), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
