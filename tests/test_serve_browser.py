"""The web app in a real headless Chromium against a real ``facelab serve`` process."""

from __future__ import annotations

import pytest

from browser_helpers import artifact_dir, chromium_page
from cli_helpers import link_or_copy, run_script
from serve_helpers import ServerProcess
from shared_data import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve-browser")
    made = run_script(["serve", "keys", "create", "--name", "browser", "--scope", "admin", "--data-dir", data])
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    lib = tmp_path_factory.mktemp("browser-library")
    for name in ("img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img17.jpg", "img3.jpg"):
        link_or_copy(shared_file(f"data/verification/deepface/{name}"), lib / name)
    with ServerProcess(data, ["--workers", "2", "--library", str(lib)]) as proc:
        yield proc, key


def _use_key(page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button")


def _open_with_key(page, url: str, key: str, ready: str) -> None:
    """Open the page at ``url``, enter the key and wait for ``ready`` (a selector of the page's form)."""
    page.goto(url)
    page.wait_for_selector("#collection-form")
    _use_key(page, key)
    page.wait_for_selector(ready)


def _create_collection(page, name: str) -> None:
    page.fill("#new-collection", name)
    page.click("#create-collection")
    page.wait_for_selector(f"#collection option[value={name}]", state="attached")


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
        assert page.page_errors == [] and page.console_errors == []


def test_without_a_key_the_page_shows_the_servers_error(server):
    proc, _ = server
    with chromium_page() as page:
        page.goto(proc.url + "/#detect")
        page.wait_for_selector("#detect-form")
        page.set_input_files("#detect-file", str(shared_file("data/images/t1.jpg")))
        page.click("#detect-run")
        page.wait_for_selector("#detect-result .error")
        assert "unauthorized" in page.inner_text("#detect-result")


def test_enroll_a_person_then_find_them_by_another_photo(server, tmp_path):
    proc, key = server
    shots = artifact_dir(tmp_path)
    df = "data/verification/deepface/"
    with chromium_page() as page:
        page.on("dialog", lambda d: d.accept())
        _open_with_key(page, proc.url + "/#people", key, "#collection-form")
        _create_collection(page, "friends")
        page.fill("#enroll-name", "Angelina")
        page.set_input_files("#enroll-files", [str(shared_file(df + "img1.jpg")), str(shared_file(df + "img2.jpg"))])
        page.click("#enroll-run")
        page.wait_for_selector("#enroll-result", timeout=60_000)
        assert "enrolled Angelina with 2 face(s)" in page.inner_text("#enroll-result")
        page.wait_for_selector(".person-name")
        assert page.inner_text(".person-name") == "Angelina"
        page.click(".person button:has-text('Faces')")
        page.wait_for_selector(".person img.thumb")
        assert page.locator(".person img.thumb").count() == 2
        page.screenshot(path=str(shots / "people-enrolled.png"), full_page=True)

        page.click("nav a[data-page=search]")
        page.wait_for_selector("#search-form")
        page.set_input_files("#search-file", str(shared_file(df + "img4.jpg")))
        page.click("#search-run")
        page.wait_for_selector("#search-table", timeout=60_000)
        assert page.inner_text("#search-table .identity") == "Angelina"
        page.screenshot(path=str(shots / "search-match.png"), full_page=True)

        page.set_input_files("#search-file", str(shared_file(df + "img17.jpg")))
        page.click("#search-run")
        from playwright.sync_api import expect

        expect(page.locator("#search-table .identity")).to_have_text("unknown", timeout=60_000)
        assert page.page_errors == [] and page.console_errors == []


def test_albums_index_a_library_group_it_and_name_a_person(server, tmp_path):
    from playwright.sync_api import expect

    proc, key = server
    shots = artifact_dir(tmp_path)
    with chromium_page() as page:
        page.on("dialog", lambda d: d.accept("Angelina") if d.type == "prompt" else d.accept())
        _open_with_key(page, proc.url + "/#index", key, "#index-form")
        _create_collection(page, "album")
        page.select_option("#collection", "album")
        page.click("#index-run")
        expect(page.locator(".job[data-status=done]").first).to_be_visible(timeout=120_000)
        assert "6/6 images" in page.inner_text(".job[data-status=done] .job-status")
        page.screenshot(path=str(shots / "index-job-done.png"), full_page=True)

        page.click("nav a[data-page=albums]")
        page.wait_for_selector("#cluster-run")
        page.select_option("#collection", "album")
        page.click("#cluster-run")
        page.wait_for_selector("#cluster-result", timeout=60_000)
        expect(page.locator(".album").first).to_be_visible()
        first = page.locator(".album").first
        assert first.locator("img.thumb").count() == 4  # the four photos of one person, as crops
        first.locator("button:has-text('Name')").click()
        expect(page.locator(".album .album-name").first).to_have_text("Angelina")
        page.screenshot(path=str(shots / "albums.png"), full_page=True)
        assert page.page_errors == [] and page.console_errors == []
