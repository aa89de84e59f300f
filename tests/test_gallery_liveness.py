"""The liveness gate of enrolment and search (``--require-live``): spoofs are refused with ``spoof_detected``."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_main
from liveness_helpers import LIVE, SPOOFS, install_liveness_pack
from shared_data import require_module, shared_file

require_module("onnxruntime")

from facelab.gallery import Gallery  # noqa: E402
from facelab.gallery.enroll import analyzer_liveness  # noqa: E402
from facelab.pipeline import FaceAnalyzer  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("live-home")
    install_liveness_pack(home)
    return home


@pytest.fixture(scope="module")
def analyzer(home):
    return FaceAnalyzer(modules=["all", "liveness"], home=home, download=False)


def test_enrolment_refuses_spoofs_and_search_skips_them(analyzer, tmp_path):
    with Gallery.open(f"sqlite:///{tmp_path / 'g.db'}") as g:
        spoof = g.enroll([shared_file(SPOOFS[0])], analyzer, name="printed", is_live=analyzer_liveness)
        assert spoof.face_ids == [] and spoof.rejected[0].reasons == ("spoof_detected",)
        live = g.enroll([shared_file(LIVE)], analyzer, name="live", is_live=analyzer_liveness)
        assert len(live.face_ids) == 1
        hits = g.search_image(shared_file(LIVE), analyzer, is_live=analyzer_liveness)
        assert len(hits) == 1 and hits[0].rejected is None and hits[0].best.name == "live"
        for path in SPOOFS:
            gated = g.search_image(shared_file(path), analyzer, is_live=analyzer_liveness)
            assert gated and all(h.rejected == "spoof_detected" and h.matches == [] for h in gated)
            assert all(h.to_dict()["rejected"] == "spoof_detected" for h in gated)
        ungated = g.search_image(shared_file(SPOOFS[0]), analyzer)
        assert ungated[0].rejected is None and ungated[0].matches  # without the gate it is searched


def test_cli_require_live(home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACELAB_HOME", str(home))
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    code, _, err = run_main(
        ["people", "add", "Spoofy", shared_file(SPOOFS[1]), "--gallery", db, "--require-live"], capsys
    )
    assert code != 0 or "spoof_detected" in err, err
    assert "spoof_detected" in err
    code, _, err = run_main(["people", "add", "Live", shared_file(LIVE), "--gallery", db, "--require-live"], capsys)
    assert code == 0, err
    code, out, err = run_main(["search", shared_file(SPOOFS[1]), "--gallery", db, "--require-live", "--json"], capsys)
    assert code == 0, err
    record = json.loads(out.splitlines()[0])
    assert record["faces"] and [f["rejected"] for f in record["faces"]] == ["spoof_detected"] * len(record["faces"])
    code, out, _ = run_main(["people", "list", "--gallery", db, "--json"], capsys)
    assert code == 0 and [p["name"] for p in json.loads(out)] == ["Live"]
