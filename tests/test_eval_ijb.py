"""IJB 1:1 / 1:N on a synthetic set written in the official formats, and MegaFace scoring, with planted answers."""

import json

import cv2
import numpy as np
import pytest

from facelab.alignment.templates import arcface_points
from facelab.cli import main
from facelab.eval.ijb import ijb_face_features, load_ijb_meta, template_features
from facelab.eval.megaface import evaluate_megaface

N_ID = 12
DIM = 16


def _write_set(root):
    """Identity k's faces point along basis vector k; templates 2k (gallery) and 2k+1 (probe) per identity.

    Planted error: the probe template of identity 5 holds faces of identity 7 (both in gallery G2).
    """
    meta = root / "meta"
    meta.mkdir(parents=True)
    (root / "loose_crop").mkdir()
    names, rows, feats, lmk = [], [], [], []
    media = 0
    for k in range(N_ID):
        for t, n_faces in ((2 * k, 2), (2 * k + 1, 3)):
            for f in range(n_faces):
                if f % 2 == 0:
                    media += 1
                ident = 7 if (k == 5 and t == 2 * k + 1) else k
                name = f"{len(names)}.png"
                names.append(name)
                rows.append(f"{name} {t} {media}")
                v = np.zeros(DIM, np.float32)
                v[ident] = 1.0 + 0.1 * f
                feats.append(v)
                lmk.append(" ".join(f"{x:.3f}" for x in (arcface_points(112) + 20).ravel()))
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(rows) + "\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(f"{n} {p} 0.9" for n, p in zip(names, lmk)) + "\n")
    pairs = []
    for k in range(N_ID):
        pairs.append(f"{2 * k} {2 * k + 1} 1")
        for j in range(N_ID):
            if j != k:
                pairs.append(f"{2 * k} {2 * j + 1} 0")
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    g1 = [k for k in range(N_ID) if k % 2 == 0]
    g2 = [k for k in range(N_ID) if k % 2 == 1]
    for name, ids in (("G1", g1), ("G2", g2)):
        (meta / f"ijbc_1N_gallery_{name}.csv").write_text(
            "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{2 * k},{k},x\n" for k in ids)
        )
    (meta / "ijbc_1N_probe_mixed.csv").write_text(
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "".join(f"{2 * k + 1},{k},x\n" for k in range(N_ID))
    )
    np.save(root / "feats.npy", np.array(feats))
    return names


def test_template_pooling_by_hand():
    f = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [5.0, 5.0, 0]])
    templates = np.array([7, 7, 7, 3])
    medias = np.array([1, 1, 2, 9])
    score = np.array([1.0, 0.5, 2.0, 1.0])
    ids, t = template_features(f, templates, medias, score, chunk=2)
    assert ids.tolist() == [3, 7]
    # template 7: media 1 -> mean(1*f0, 0.5*f1) = (0.5, 0.25, 0); media 2 -> 2*f2 = (0, 0, 2); sum (0.5, 0.25, 2)
    expected = np.array([0.5, 0.25, 2.0]) / np.linalg.norm([0.5, 0.25, 2.0])
    assert np.allclose(t[1], expected)
    assert np.allclose(t[0], [np.sqrt(0.5), np.sqrt(0.5), 0])


def test_ijb_cli_planted_answer(tmp_path):
    _write_set(tmp_path)
    out = tmp_path / "ijb.json"
    assert (
        main(["eval", "ijb", "--root", str(tmp_path), "--features", str(tmp_path / "feats.npy"), "--json", str(out)])
        == 0
    )
    r = json.loads(out.read_text())
    one = r["1:1"]
    assert (one["n_genuine"], one["n_impostor"]) == (N_ID, N_ID * (N_ID - 1))
    # genuine scores are 1 except identity 5 (0); impostors are 0 except (gallery template 14, probe 11) = 1.
    # FAR 0.1: 13 false accepts allowed of 132 -> threshold 0, TAR = 11 / 12.
    assert one["tar_at_far_strict"]["0.1"]["tar"] == pytest.approx(11 / 12)
    assert one["tar_at_far_strict"]["0.01"]["tar"] == pytest.approx(11 / 12)  # 1 allowed: the score-1 impostor
    assert one["tar_at_far_strict"]["0.001"]["status"] == "insufficient impostors"
    g = r["1:N"]
    # identity 5 (in G2) is probed with identity 7's face: subject 7 outranks subject 5 in G2 (rank 2).
    assert g["G1"]["rank"]["1"] == 1.0 and g["G1"]["n_mated"] == 6
    assert g["G2"]["rank"]["1"] == pytest.approx(5 / 6) and g["G2"]["rank"]["10"] == 1.0
    assert g["G1+G2"]["rank"]["1"] == pytest.approx(11 / 12)
    # G2: non-mated probes are the 6 G1 subjects; scores 0 -> FPIR 0.1 threshold... 6 * 0.1 < 1: insufficient
    assert g["G2"]["tpir_at_fpir"]["0.1"] == "insufficient non-mated probes"
    # G1: 6 non-mated probes are too few for FPIR 0.01 as well.
    assert g["G1"]["tpir_at_fpir"]["0.01"] == "insufficient non-mated probes"


def test_ijb_face_features_align_and_flip(tmp_path):
    names = _write_set(tmp_path)
    for i, n in enumerate(names[:4]):
        img = np.zeros((160, 160, 3), np.uint8)
        img[:, :80] = (40 * i, 100, 200)
        cv2.imwrite(str(tmp_path / "loose_crop" / n), img)
    meta = load_ijb_meta(tmp_path, "IJBC")
    meta.names, meta.landmarks = meta.names[:4], meta.landmarks[:4]

    def embed(batch):
        return batch.reshape(len(batch), -1, 3).astype(np.float64).mean(axis=1)

    f = ijb_face_features(meta, embed, batch_size=3)
    assert f.shape == (4, 3)
    # colour mean is flip-invariant, so the F2 feature is twice the crop's mean colour
    crop_mean = embed(
        np.stack(
            [
                cv2.warpAffine(
                    cv2.imread(str(tmp_path / "loose_crop" / names[0])),
                    np.array([[1.0, 0, -20], [0, 1.0, -20]]),
                    (112, 112),
                )
            ]
        )
    )[0]
    assert np.allclose(f[0], 2 * crop_mean, atol=1e-3)


def test_megaface_planted_answer():
    rng = np.random.default_rng(0)
    dim = 32
    ids = np.repeat(np.arange(4), 3)
    centres = np.eye(dim)[:4]
    probes = centres[ids] + 0.01 * rng.normal(size=(12, dim))
    distractors = np.eye(dim)[4:] + 0.0  # 28 orthogonal distractors
    # plant one distractor identical to identity 0's direction: it beats the genuine matches of identity 0
    distractors = np.vstack([distractors[:9], centres[0] * 2, distractors[9:]])
    r = evaluate_megaface(probes, ids, distractors, sizes=(9, 10, 29), fars=(0.01, 1e-6), chunk=4)
    whole = evaluate_megaface(probes, ids, distractors, sizes=(29,), fars=(0.01,), chunk=1000)
    assert whole["29"] == {**r["29"], "tar_at_far": {"0.01": r["29"]["tar_at_far"]["0.01"]}}
    assert r["9"]["rank1"] == 1.0
    # from 10 distractors on, identity 0's 6 ordered pairs (of 24) are beaten at rank 1 but not at rank 2
    assert r["10"]["rank1"] == pytest.approx(18 / 24)
    assert r["10"]["cmc"]["2"] == 1.0
    assert r["29"]["tar_at_far"]["1e-06"] == "insufficient impostors"
    # FAR 0.01 of 12 * 29 = 348 impostors: 3 allowed; the 3 identity-0 probes' scores on the planted
    # distractor (~1) are the top 3, so the threshold is ~0 and every genuine pair passes
    assert r["29"]["tar_at_far"]["0.01"] == 1.0


def test_pair_scores_gather_and_gram_agree_with_direct_dot_products():
    from facelab.eval.ijb import template_pair_scores

    rng = np.random.default_rng(1)
    feats = rng.standard_normal((300, 24))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = np.arange(300) * 3 + 5  # sparse, sorted template ids
    rows1, rows2 = rng.integers(0, 300, 5000), rng.integers(0, 300, 5000)
    direct = np.array([feats[a] @ feats[b] for a, b in zip(rows1, rows2)])
    for method in ("gather", "gram"):
        got = template_pair_scores(
            ids, feats, ids[rows1], ids[rows2], method=method, dtype=np.float64, block_rows=37, batch=999
        )
        assert np.allclose(got, direct, atol=1e-12)
    from facelab.errors import ConfigError

    with pytest.raises(ConfigError, match="no faces"):
        template_pair_scores(ids, feats, np.array([6]), np.array([5]))
