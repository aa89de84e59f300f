"""The web app in a real headless Chromium against a real ``facelab serve`` process."""

from __future__ import annotations

import pytest

from browser_helpers import artifact_dir, chromium_page
from cli_helpers import run_script
from serve_helpers import ServerProcess
from shared_data import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-browser")
    made = run_script(["serve", "keys", "create", "--name", "browser", "--scope", "admin", "--data-dir", data])
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    with ServerProcess(data, ["--workers", "2"]) as proc:
        yield proc, key


def _use_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button")


def test_detect_page_boxes_the_faces_of_a_shared_photo(server, tmp_path):
    proc, key = server
    shots = artifact_dir(tmp_path)
    with chromium_page() as page:
        page.goto(proc.url + "/#detect")
        page.wait_for_selector("#detect-form")
        _use_key(page, key)
        page.set_input_files("#detect-file", str(shared_file("data/images/t1.jpg")))
        page.click("#detect-run")
        page.wait_for_selector("#detect-count", timeout=60_000)
        assert page.inner_text("#detect-count").startswith("6 face(s)")
        assert page.get_attribute("#detect-canvas", "data-faces") == "6"
        assert page.locator("#face-table tbody tr").count() == 6
        page.screenshot(path=str(shots / "detect-t1.png"), full_page=True)
        assert page.console_errors == []


def test_without_a_key_the_page_shows_the_servers_error(server):
    proc, _ = server
    with chromium_page() as page:
        page.goto(proc.url + "/#detect")
        page.wait_for_selector("#detect-form")
        page.set_input_files("#detect-file", str(shared_file("data/images/t1.jpg")))
        page.click("#detect-run")
        page.wait_for_selector("#detect-result .error")
        assert "unauthorized" in page.inner_text("#detect-result")
