"""``facelab cluster`` and the ``people`` corrections on a real gallery (SQLite and PostgreSQL), real photos.

``index`` puts the photos into the gallery, ``cluster`` makes people, the user corrects them
(``people merge|split|move|reject|delete``), and every later run — full or incremental — keeps
what the user said. Contact sheets and ``people list --json`` show the result.
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_clean_error, run_main
from gallery_fixtures import BACKENDS, copy_photos, gallery_home, gallery_url, small_photos  # noqa: F401

pytestmark = pytest.mark.slow

LIBRARY = ["A1", "A2", "A4", "B13", "B14", "B15", "C20", "C21", "D3", "D12", "couple", "RD1", "RD2"]
LATER = ["A5"]  # indexed after the first clustering run


@pytest.fixture
def env(monkeypatch, gallery_home):
    monkeypatch.setenv("FACELAB_HOME", str(gallery_home))
    monkeypatch.delenv("FACELAB_GALLERY", raising=False)


def people(g: str, capsys) -> dict[int, dict]:
    code, out, err = run_main(["people", "list", "--gallery", g, "--json"], capsys)
    assert code == 0, err
    return {p["id"]: p for p in json.loads(out)}


def person_of(state: dict[int, dict]) -> dict[str, int]:
    """photo file name -> person id (photos with one face)."""
    out = {}
    for pid, p in state.items():
        for f in p["face_list"]:
            out.setdefault(Path(f["image"]).stem, pid)
    return out


def assert_no_photo_twice(state: dict[int, dict]) -> None:
    for p in state.values():
        images = [f["image"] for f in p["face_list"]]
        assert len(images) == len(set(images)), f"person {p['id']} holds two faces of one photo"


@pytest.mark.parametrize("backend", BACKENDS)
def test_cluster_correct_and_keep(env, tmp_path, small_photos, capsys, backend: str) -> None:
    g = gallery_url(backend, tmp_path)
    library = tmp_path / "photos"
    copy_photos(small_photos, LIBRARY, library)
    code, _, err = run_main(["index", library, "--gallery", g, "--offline"], capsys)
    assert code == 0, err
    code, out, err = run_main(["cluster", "--gallery", g, "--json", "--sheets", tmp_path / "sheets"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["mode"] == "full" and summary["people"] >= 4
    sheets = sorted(p.name for p in (tmp_path / "sheets").iterdir())
    assert "overview.png" in sheets and len(sheets) == summary["people"] + 1
    assert all((tmp_path / "sheets" / s).stat().st_size > 1000 for s in sheets)

    state = people(g, capsys)
    assert_no_photo_twice(state)
    for p in state.values():  # every person, named or not, with its faces' photos and boxes
        assert p["kind"] == "cluster" and p["face_list"]
        assert all(Path(f["image"]).exists() and len(f["bbox"]) == 4 for f in p["face_list"])
    where = person_of(state)
    assert where["A1"] == where["A2"] == where["A4"]
    assert where["B13"] == where["B14"] == where["B15"] != where["A1"]
    assert where["RD1"] == where["RD2"]

    # the user: B and C are one person (merge), RD2 is someone else (split), D3 is RD's (move: a
    # look-alike the user knows), and A4 is not A (reject)
    a, b, c, rd = (where[k] for k in ("A1", "B13", "C20", "RD1"))
    assert len({a, b, c, rd}) == 4 and "D3" not in where  # D's two photos are too far apart at 360 px
    face = {Path(f["image"]).stem: f["id"] for p in state.values() for f in p["face_list"]}
    assert run_main(["people", "merge", b, c, "--gallery", g], capsys)[0] == 0
    code, out, err = run_main(
        ["people", "split", rd, face["RD2"], "--name", "RD twin", "--gallery", g, "--json"], capsys
    )
    assert code == 0, err
    twin = json.loads(out)["new_person"]
    d3 = _face_id(tmp_path, g, "D3", capsys)
    assert run_main(["people", "move", d3, "--to", rd, "--gallery", g], capsys)[0] == 0
    assert run_main(["people", "reject", a, face["A4"], "--gallery", g], capsys)[0] == 0

    def check(state: dict[int, dict]) -> None:
        where = person_of(state)
        assert where["B13"] == where["B14"] == where["B15"] == where["C20"] == where["C21"] == b
        assert where["RD2"] == twin != where["RD1"] == rd
        assert where["D3"] == rd
        assert where["A1"] == where["A2"] == a and where.get("A4") != a
        assert_no_photo_twice(state)

    check(people(g, capsys))
    for extra in (["--full"], ["--full", "--algorithm", "agglomerative"], []):
        code, _, err = run_main(["cluster", "--gallery", g, *extra], capsys)
        assert code == 0, err
        check(people(g, capsys))
    # a new photo of A arrives: the incremental run puts it with A, the corrections stay
    copy_photos(small_photos, LATER, library)
    assert run_main(["index", library, "--gallery", g, "--offline"], capsys)[0] == 0
    code, out, err = run_main(["cluster", "--gallery", g, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["mode"] == "incremental"
    after = people(g, capsys)
    check(after)
    assert person_of(after)["A5"] == a

    # deleting a person never brings it back: not with its faces, nor from faces kept
    state = people(g, capsys)
    b_faces = {f["id"] for f in state[b]["face_list"]}
    assert run_main(["people", "delete", b, "--gallery", g], capsys)[0] == 0
    assert run_main(["people", "delete", twin, "--keep-faces", "--gallery", g], capsys)[0] == 0
    for extra in (["--full"], []):
        assert run_main(["cluster", "--gallery", g, *extra], capsys)[0] == 0
        now = people(g, capsys)
        assert b not in now and twin not in now
        held = {f["id"] for p in now.values() for f in p["face_list"]}
        assert not (held & b_faces) and face["RD2"] not in held


def _face_id(tmp_path: Path, g: str, stem: str, capsys) -> int:
    """The id of the (one) face of photo ``stem``, assigned or not."""
    from facelab.gallery import Gallery

    with Gallery.open(g) as gallery:
        for f in gallery.store.faces(face_ids=[int(i) for i in gallery.face_arrays().ids]):
            if f.source_path is not None and Path(str(f.source_path)).stem == stem:
                return int(f.id)
    raise AssertionError(f"no face of {stem}")


def test_cluster_errors_are_one_line(env, tmp_path, capsys) -> None:
    g = str(tmp_path / "empty.db")
    assert run_main(["gallery", "create", "default", "--gallery", g], capsys)[0] == 0
    code, _, err = run_main(["cluster", "--gallery", g], capsys)
    assert code == 2
    assert_clean_error(err, command="cluster")
    code, _, err = run_main(["cluster"], capsys)
    assert code == 2 and "no gallery given" in err
    code, _, err = run_main(["people", "move", "x", "--to", "1", "--gallery", g], capsys)
    assert code == 2
    assert_clean_error(err, command="people")


def test_lone_faces_make_no_person(env, tmp_path, small_photos, capsys) -> None:
    g = str(tmp_path / "g.db")
    copy_photos(small_photos, ["B13", "C20", "RD1"], tmp_path / "p")  # three faces of three people
    assert run_main(["index", tmp_path / "p", "--gallery", g, "--offline"], capsys)[0] == 0
    code, out, err = run_main(["cluster", "--gallery", g, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["faces"], summary["assigned"], summary["people"]) == (3, 0, 0)
    assert people(g, capsys) == {}
