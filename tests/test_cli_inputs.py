"""What ``facelab analyze`` reads: input expansion (files, folders, globs) and background decoding."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import shared_data
from cli_helpers import link_or_copy
from facelab.errors import ImageError
from facelab.io.paths import expand_image_inputs
from facelab.io.prefetch import iter_decoded
from shared_data import shared_file


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name in ("b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt", "sub/e.JPG"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "folder.jpg").mkdir()  # a folder with an image ending is not an image
    return root


def test_folder_is_scanned_recursively_for_image_endings(tree: Path) -> None:
    found = expand_image_inputs([tree])
    rel = [p.relative_to(tree).as_posix() for p in found]
    assert rel == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp", "sub/e.JPG"]
    shallow = expand_image_inputs([tree], recursive=False)
    assert [p.name for p in shallow] == ["a.PNG", "b.jpg"]


def test_files_globs_order_and_repeats(tree: Path) -> None:
    found = expand_image_inputs([tree / "notes.txt", str(tree / "sub" / "*.j*g"), tree, tree / "b.jpg"])
    rel = [p.relative_to(tree).as_posix() for p in found]
    # An explicit file is kept whatever its ending; a repeat keeps its first place; the pattern
    # is matched as glob does on this system (case-sensitive on Linux, so e.JPG comes from the folder).
    expected_glob = sorted(p.relative_to(tree).as_posix() for p in (tree / "sub").glob("*.j*g"))
    rest = [n for n in ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp", "sub/e.JPG"] if n not in expected_glob]
    assert rel == ["notes.txt", *expected_glob, *rest]
    assert "sub/c.jpeg" in expected_glob
    assert [p.name for p in expand_image_inputs([str(tree / "**" / "*.webp")])] == ["d.webp"]


def test_symlinks_to_one_file_are_separate_inputs(tmp_path: Path) -> None:
    target = tmp_path / "real.jpg"
    target.write_bytes(b"x")
    link_or_copy(target, tmp_path / "alias.jpg")
    found = expand_image_inputs([tmp_path / "real.jpg", tmp_path / "alias.jpg", tmp_path / "real.jpg"])
    assert [p.name for p in found] == ["real.jpg", "alias.jpg"]


def test_missing_inputs_are_all_named(tree: Path) -> None:
    with pytest.raises(ImageError) as exc:
        expand_image_inputs([tree / "nope.jpg", tree / "b.jpg", str(tree / "*.gif")])
    assert str(tree / "nope.jpg") in str(exc.value) and str(tree / "*.gif") in str(exc.value)
    assert str(tree / "b.jpg") not in str(exc.value)


def test_background_decoding_keeps_order_and_reports_bad_files(tmp_path: Path) -> None:
    photos = [
        shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg"),
        shared_file("data/images/inspireface/bulk/woman.png"),
        shared_file("data/images/inspireface/RD/d1.jpeg"),
    ]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photos[0].read_bytes()[:100])
    paths = [photos[0], bad, photos[1], tmp_path / "gone.jpg", photos[2]]
    consumed: list[Path] = []

    def source():
        for p in paths:
            consumed.append(p)
            yield p

    stream = iter_decoded(source(), workers=1, prefetch=3)
    first = next(stream)
    # Decoding runs ahead of the consumer, in a named background thread.
    assert len(consumed) >= 3
    assert any(t.name.startswith("facelab-decode") for t in threading.enumerate())
    items = [first, *stream]
    assert [i.path for i in items] == paths
    for item, path in zip(items, paths):
        if path in photos:
            assert item.error is None
            np.testing.assert_array_equal(item.image, cv2.imread(str(path)))
        else:
            assert item.image is None and item.error.startswith(f"{path}: ")
    assert "no such file" in items[3].error
    assert not any(t.name.startswith("facelab-decode") for t in threading.enumerate())  # pool shut down


def test_stopping_early_shuts_the_pool_down() -> None:
    photo = shared_file("data/images/inspireface/bulk/Rob_Lowe_0001.jpg")
    stream = iter_decoded([photo] * 6, prefetch=4)
    assert next(stream).error is None
    stream.close()
    assert not any(t.name.startswith("facelab-decode") for t in threading.enumerate())


def test_sample_names_resolve_to_files_of_installed_packages():
    from facelab import ImageError
    from facelab.io.paths import expand_image_inputs
    from facelab.io.samples import sample_path

    shared_data.require_module("skimage")
    (path,) = expand_image_inputs(["sample:astronaut"])
    assert path.name == "astronaut.png" and path.is_file()
    assert sample_path("astronaut") == path
    with pytest.raises(ImageError, match="unknown sample image 'nobody'"):
        expand_image_inputs(["sample:nobody"])
