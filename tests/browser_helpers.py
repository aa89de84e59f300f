"""A real headless Chromium (Debian's ``chromium`` package) driven by Playwright, for the web-app tests.

``FACELAB_CHROMIUM`` overrides the browser path (default ``/usr/bin/chromium``). Screenshots go to
``$FACELAB_TEST_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared_data import missing_dependency

__all__ = ["chromium_page", "artifact_dir"]

_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artifact_dir(tmp_path: Path) -> Path:
    """Where screenshots are written."""
    folder = Path(os.environ.get("FACELAB_TEST_ARTIFACTS") or tmp_path) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium_page() -> Iterator[object]:
    """A fresh page in a fresh headless Chromium.

    Uncaught script errors are collected in ``page.page_errors``; console errors other than failed
    resource loads (a 401 before a key is entered is expected) in ``page.console_errors``.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_dependency("the browser tests need playwright (pip install playwright)")
    exe = os.environ.get("FACELAB_CHROMIUM", "/usr/bin/chromium")
    if not Path(exe).exists():
        missing_dependency(f"the browser tests need Chromium at {exe} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.console_errors = []
            page.page_errors = []

            def on_console(message: object) -> None:
                if message.type == "error" and "Failed to load resource" not in message.text:
                    page.console_errors.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda e: page.page_errors.append(str(e)))
            yield page
        finally:
            browser.close()
