"""The gallery commands end to end: ``facelab people``, ``index``, ``search`` and ``gallery``, on real photos.

Run in this process through ``facelab.cli.main`` (the console script itself is exercised by
``test_gallery_index.py``'s kill -9 test); the open pack comes from the session's model home.
"""

# ruff: noqa: F811
# (the pytest fixtures imported from gallery_fixtures are test parameters here)
from __future__ import annotations

import json

import pytest

from cli_helpers import assert_clean_error, run_main
from gallery_fixtures import analyzer, copy_photos, gallery_home, small_photos  # noqa: F401


@pytest.fixture
def env(monkeypatch, gallery_home):
    monkeypatch.setenv("FACELAB_HOME", str(gallery_home))
    monkeypatch.delenv("FACELAB_GALLERY", raising=False)


def _json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_people_index_search_and_manage(env, tmp_path, small_photos, capsys):
    p = small_photos
    g = str(tmp_path / "family.db")
    code, out, err = run_main(["people", "add", "Angelina", p["A1"], p["A2"], "--gallery", g, "--offline",
                               "--metadata", '{"role": "actor"}', "--json"], capsys)  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert added["person"]["name"] == "Angelina" and len(added["face_ids"]) == 2
    code, out, err = run_main(["people", "add", "Group", p["couple"], "--gallery", g, "--offline"], capsys)
    assert code == 2 and "multiple_faces" in err and "registration failed" in err
    code, _, err = run_main(["people", "add", "Bee", p["B13"], p["noface"], "--gallery", g, "--offline"], capsys)
    assert code == 3 and "face_not_found" in err

    copy_photos(p, ["D3"], tmp_path / "known" / "Dee")
    code, out, err = run_main(
        ["index", "--people-from-folders", tmp_path / "known", "--gallery", g, "--offline"], capsys
    )
    assert code == 0 and "Dee (id 3): 1 face(s) enrolled" in err, err

    library = tmp_path / "photos"
    copy_photos(p, ["A4", "B15", "C20", "couple"], library)
    code, out, err = run_main(["index", library, "--gallery", g, "--offline", "--json"], capsys)
    assert code == 0, err
    report = _json_lines(out)[-1]
    assert (report["indexed"], report["faces_added"], report["errors"]) == (4, 5, 0)
    assert "4 image(s) indexed (5 face(s))" in err and "img/s" in err
    code, out, _ = run_main(["index", library, "--gallery", g, "--offline", "--json"], capsys)
    assert _json_lines(out)[-1]["unchanged"] == 4

    code, out, err = run_main(["search", p["A4"], p["C20"], p["couple"], "--gallery", g, "--offline", "--json"], capsys)
    assert code == 0, err
    records = _json_lines(out)
    assert [r["path"] for r in records] == [str(p["A4"]), str(p["C20"]), str(p["couple"])]
    who = [[f["identity"]["name"] if f["identity"] else None for f in r["faces"]] for r in records]
    assert who[0] == ["Angelina"] and who[1] == [None] and len(who[2]) == 2
    code, out, _ = run_main(["search", p["A4"], "--gallery", g, "--offline"], capsys)
    assert "Angelina (" in out and "box=(" in out
    code, out, _ = run_main(["search", p["A4"], "--gallery", g, "--offline", "--photos", "2", "--json"], capsys)
    paths = [item["path"] for item in _json_lines(out)[0]["photos"][0]]
    assert str(library / "A4.jpg") in paths  # the indexed copy of the same photo is the closest face

    code, out, _ = run_main(["people", "list", "--gallery", g, "--json"], capsys)
    people = json.loads(out)
    assert [(x["name"], x["faces"]) for x in people] == [("Angelina", 2), ("Bee", 1), ("Dee", 1)]
    assert people[0]["metadata"] == {"role": "actor"}
    code, out, _ = run_main(["people", "show", "Angelina", "--gallery", g, "--json"], capsys)
    shown = json.loads(out)
    assert [f["source_path"] for f in shown["face_list"]] == [str(p["A1"]), str(p["A2"])]
    code, out, _ = run_main(["people", "rename", "Bee", "B. Person", "--gallery", g], capsys)
    assert code == 0 and "B. Person" in out
    code, out, _ = run_main(["people", "merge", "Angelina", "B. Person", "--gallery", g, "--json"], capsys)
    assert json.loads(out)["moved_faces"] == 1
    code, out, _ = run_main(["gallery", "info", "--gallery", g, "--json", "--check"], capsys)
    info = json.loads(out)
    assert info["integrity"] == ["ok"]
    (coll,) = info["collections"]
    assert (coll["persons"], coll["faces"], coll["images"]) == (2, 9, 4)
    assert coll["contract"]["dim"] == 128

    export = tmp_path / "export"
    code, _, err = run_main(["gallery", "export", export, "--gallery", g], capsys)
    assert code == 0, err
    assert (export / "manifest.json").is_file()
    other = str(tmp_path / "copy.db")
    code, _, err = run_main(["gallery", "import", export, "--gallery", other, "--rename", "default=family"], capsys)
    assert code == 0, err
    code, out, _ = run_main(["people", "list", "--gallery", other, "--collection", "family", "--json"], capsys)
    assert [(x["name"], x["faces"]) for x in json.loads(out)] == [("Angelina", 3), ("Dee", 1)]

    code, out, _ = run_main(["people", "delete", "Angelina", "--gallery", g, "--json"], capsys)
    assert json.loads(out) == [{"id": people[0]["id"], "name": "Angelina", "faces": 3}]
    code, out, _ = run_main(["search", p["A4"], "--gallery", g, "--offline", "--json"], capsys)
    assert _json_lines(out)[0]["faces"][0]["identity"] is None


def test_clean_errors(env, tmp_path, small_photos, capsys):
    code, _, err = run_main(["people", "list"], capsys)
    assert code == 2
    assert_clean_error(err, "no gallery given", "FACELAB_GALLERY", command="people")
    bogus = tmp_path / "bogus.db"
    bogus.write_text("definitely not sqlite " * 50)
    code, _, err = run_main(["search", small_photos["A1"], "--gallery", bogus, "--offline"], capsys)
    assert code == 2
    assert_clean_error(err, str(bogus), "not a facelab gallery", command="search")
    code, _, err = run_main(["people", "show", "nobody", "--gallery", tmp_path / "new.db"], capsys)
    assert code == 2
    assert_clean_error(err, "no collection named 'default'", command="people")
    code, _, err = run_main(["index", "--gallery", tmp_path / "new.db"], capsys)
    assert_clean_error(err, "PHOTOS", command="index")
    code, _, err = run_main(["gallery", "info", "--gallery", "mysql://x/y"], capsys)
    assert_clean_error(err, "unknown scheme 'mysql'", command="gallery")
