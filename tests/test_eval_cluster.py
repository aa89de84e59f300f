"""Clustering metrics against hand-computed cases, scikit-learn's NMI, the label loaders and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cli_helpers import assert_clean_error, run_main
from facelab.errors import ConfigError
from facelab.eval.cluster import (
    bcubed_prf,
    cluster_metrics,
    labels_from_csv,
    labels_from_folders,
    labels_from_pairs,
    load_labels,
    nmi,
    pairwise_prf,
    same_image_violations,
)
from shared_data import require_module, shared_file

# gt: faces 0,1,2 are person A, faces 3,4 person B; pred puts {0,1} and {2,3,4} together.
GT = [0, 0, 0, 1, 1]
PRED = [0, 0, 1, 1, 1]


def test_pairwise_by_hand() -> None:
    # predicted pairs: (0,1) ok; (2,3) (2,4) wrong; (3,4) ok -> 2 of 4
    # true pairs: (0,1) (0,2) (1,2) (3,4) -> found (0,1), (3,4): 2 of 4
    p, r, f = pairwise_prf(GT, PRED)
    assert p == pytest.approx(0.5) and r == pytest.approx(0.5) and f == pytest.approx(0.5)


def test_bcubed_by_hand() -> None:
    # per-face precision: 1, 1, 1/3, 2/3, 2/3; per-face recall: 2/3, 2/3, 1/3, 1, 1
    p, r, f = bcubed_prf(GT, PRED)
    assert p == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert r == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert f == pytest.approx(11 / 15)


def test_nmi_by_hand() -> None:
    # joint: (A, c0) 2/5, (A, c1) 1/5, (B, c1) 2/5; marginals A 3/5, B 2/5, c0 2/5, c1 3/5
    mi = 0.4 * math.log(0.4 / (0.6 * 0.4)) + 0.2 * math.log(0.2 / (0.6 * 0.6)) + 0.4 * math.log(0.4 / (0.4 * 0.6))
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))  # both labelings have sizes {3, 2}
    assert nmi(GT, PRED) == pytest.approx(mi / h)


def test_unassigned_faces_are_singletons() -> None:
    # faces 0 and 1 (one person) left unassigned: no predicted pair, the true pair is missed
    assert pairwise_prf([0, 0, 1], [-1, -1, 0]) == (1.0, 0.0, 0.0)
    p, r, f = bcubed_prf([0, 0, 1], [-1, -1, 0])
    assert (p, r) == (1.0, pytest.approx(2 / 3)) and f == pytest.approx(0.8)


def test_degenerate_cases() -> None:
    assert pairwise_prf([0, 1, 2], [5, 5, 5]) == (0.0, 1.0, 0.0)
    assert nmi([0, 1, 2], [5, 5, 5]) == 0.0
    assert nmi([3, 3], [1, 1]) == 1.0
    assert bcubed_prf(["a", "b"], [7, 9]) == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="2 true labels but 3"):
        pairwise_prf([0, 1], [0, 1, 2])
    with pytest.raises(ConfigError, match="no faces"):
        nmi([], [])


def test_nmi_matches_scikit_learn() -> None:
    metrics = require_module("sklearn.metrics")
    from sklearn.metrics import normalized_mutual_info_score

    assert metrics is not None
    rng = np.random.default_rng(0)
    for _ in range(20):
        gt = rng.integers(0, rng.integers(1, 9), 60)
        pred = rng.integers(0, rng.integers(1, 12), 60)
        assert nmi(gt, pred) == pytest.approx(normalized_mutual_info_score(gt, pred), abs=1e-12)


def test_same_image_violations_by_hand() -> None:
    # three faces of photo a in cluster 0: pairs (0,1) (0,2) (1,2); unassigned faces never count
    assert same_image_violations([0, 0, 0, 1, -1, -1], ["a", "a", "a", "a", "b", "b"]) == (3, 1)
    m = cluster_metrics(GT, PRED, image_ids=["p", "q", "r", "r", "s"])
    assert m.same_image_pairs == 1 and m.same_image_photos == 1
    assert m.faces == 5 and m.identities == 2 and m.clusters == 2 and m.unassigned == 0


def test_labels_from_folders(tmp_path) -> None:
    for person, names in {"ann": ["1.jpg", "2.png"], "bob": ["x.jpeg"]}.items():
        (tmp_path / person).mkdir()
        for name in names:
            (tmp_path / person / name).write_bytes(b"")
    (tmp_path / "ann" / "notes.txt").write_text("not an image")
    labels = load_labels(tmp_path)
    assert [p.split("/")[-1] for p in labels.items] == ["1.jpg", "2.png", "x.jpeg"]
    assert labels.labels.tolist() == ["ann", "ann", "bob"]
    with pytest.raises(ConfigError, match="no images"):
        labels_from_folders(tmp_path / "ann")


def test_labels_from_csv(tmp_path) -> None:
    path = tmp_path / "faces.csv"
    path.write_text("Image,Person\na.jpg,1\nb.jpg,1\nsub/c.jpg,2\n")
    labels = load_labels(path)
    assert labels.items == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), str(tmp_path / "sub/c.jpg")]
    assert labels.labels.tolist() == ["1", "1", "2"]
    path.write_text("image,label\na.jpg,1\na.jpg,2\n")
    with pytest.raises(ConfigError, match="two labels"):
        labels_from_csv(path)
    path.write_text("what,ever\n1,2\n")
    with pytest.raises(ConfigError, match="image column and a label column"):
        labels_from_csv(path)


def test_labels_from_pairs_are_components(tmp_path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("file_x,file_y,Decision\na,b,Yes\nb,c,yes\nd,e,Yes\na,d,No\nf,a,No\n")
    labels = load_labels(path)
    by_name = dict(zip([p.split("/")[-1] for p in labels.items], labels.labels.tolist()))
    assert by_name["a"] == by_name["b"] == by_name["c"]
    assert by_name["d"] == by_name["e"] != by_name["a"]
    assert by_name["f"] not in (by_name["a"], by_name["d"])
    path.write_text("file_x,file_y,Decision\na,b,Yes\nb,c,Yes\na,c,No\n")
    with pytest.raises(ConfigError, match="negative pair but linked"):
        labels_from_pairs(path)


def test_deepface_master_identities() -> None:
    labels = load_labels(shared_file("data/verification/deepface/master.csv"))
    by_name = dict(zip([p.split("/")[-1] for p in labels.items], labels.labels.tolist()))
    assert len(by_name) == 25
    # rows of master.csv: "img20.jpg,img21.jpg,Yes", "img1.jpg,img2.jpg,Yes", "img1.jpg,img10.jpg,Yes" ...
    assert by_name["img20.jpg"] == by_name["img21.jpg"]
    assert by_name["img1.jpg"] == by_name["img10.jpg"] == by_name["img2.jpg"]
    assert by_name["img1.jpg"] != by_name["img20.jpg"]
    assert sorted(np.unique(labels.labels, return_counts=True)[1].tolist()) == [2, 2, 2, 2, 2, 2, 2, 3, 8]


def test_cli_scores_a_prediction_csv(tmp_path, capsys) -> None:
    (tmp_path / "labels.csv").write_text("image,label\na.jpg,x\nb.jpg,x\nc.jpg,x\nd.jpg,y\ne.jpg,y\n")
    (tmp_path / "pred.csv").write_text("image,cluster\na.jpg,0\nb.jpg,0\nc.jpg,1\nd.jpg,1\ne.jpg,1\n")
    out_json = tmp_path / "out.json"
    code, out, err = run_main(
        [
            "eval",
            "cluster",
            "--labels",
            tmp_path / "labels.csv",
            "--pred",
            tmp_path / "pred.csv",
            "--json",
            out_json,
        ],
        capsys,
    )
    assert code == 0, err
    assert "bcubed_f" in out
    import json

    data = json.loads(out_json.read_text())
    assert data["metrics"]["pairwise_f"] == pytest.approx(0.5)
    assert data["metrics"]["bcubed_f"] == pytest.approx(11 / 15)


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    code, _, err = run_main(["eval", "cluster", "--labels", tmp_path / "missing.csv"], capsys)
    assert code == 2
    assert_clean_error(err, "missing.csv", command="eval")
    (tmp_path / "labels.csv").write_text("image,label\na.jpg,x\n")
    (tmp_path / "pred.csv").write_text("image,cluster\nzzz.jpg,0\n")
    code, _, err = run_main(
        ["eval", "cluster", "--labels", tmp_path / "labels.csv", "--pred", tmp_path / "pred.csv"], capsys
    )
    assert code == 2
    assert_clean_error(err, "none of the labelled images", command="eval")
