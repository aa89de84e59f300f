"""Pair-list readers and the verification loop with a real (deterministic, model-free) embedder."""

import cv2
import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.eval.pairs import identity_folder_pairs, load_pairs, read_bin, read_csv_pairs, read_lfw_pairs, write_bin
from facelab.eval.verification import embed_aligned, verify
from shared_data import shared_file


def _colour_embed(batch):
    """Embedding = mean BGR colour of the left and right halves (6-d): flips are visible to it."""
    b = batch.astype(np.float64)
    w = b.shape[2] // 2
    return np.concatenate([b[:, :, :w].mean(axis=(1, 2)), b[:, :, w:].mean(axis=(1, 2))], axis=1) - 127.5


def test_bin_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(4)]
    png = [cv2.imencode(".png", im)[1].tobytes() for im in imgs]
    path = tmp_path / "x.bin"
    write_bin(path, png, [True, False])
    images, issame = read_bin(path)
    assert images == png and issame.tolist() == [True, False]
    decoded = cv2.imdecode(np.frombuffer(images[3], np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, imgs[3])
    write_bin(path, imgs, [1, 0])  # arrays are JPEG-encoded
    images, _ = read_bin(path)
    assert images[0][:2] == b"\xff\xd8"
    with pytest.raises(ConfigError):
        write_bin(path, png[:3], [True, False])


def test_read_small_lfw_bin():
    images, issame = read_bin(shared_file("data/verification/small_lfw.bin"))
    assert len(images) == 20 and issame.tolist() == [True] * 10
    assert all(im[:2] == b"\xff\xd8" for im in images)
    ps = load_pairs(shared_file("data/verification/small_lfw.bin"))
    assert ps.aligned and ps.pairs[3].tolist() == [6, 7]


def test_verify_on_bin_with_flip_sum(tmp_path):
    # identities are colours; genuine pairs share the colour, impostors differ
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)] * 4
    imgs, flags = [], []
    for i, c in enumerate(colours):
        a = np.full((112, 112, 3), c, np.uint8)
        a[:, :56] //= 2  # left half darker: a flip changes the 6-d embedding
        if i % 2 == 0:
            b = a.copy()
            flags.append(True)
        else:
            b = np.full((112, 112, 3), colours[(i + 1) % 5], np.uint8)
            flags.append(False)
        imgs += [a, b]
    path = tmp_path / "c.bin"
    write_bin(path, [cv2.imencode(".png", x)[1].tobytes() for x in imgs], flags)
    ps = load_pairs(path)
    emb, xnorm = embed_aligned(ps.items[:2], _colour_embed, flip=True, batch_size=1)
    single = _colour_embed(imgs[0][None])[0]
    flipped = _colour_embed(imgs[0][None, :, ::-1])[0]
    assert np.allclose(emb[0], single + flipped, atol=1e-9)
    # XNorm: the mean L2 norm of every raw embedding, both views of both crops (lossless PNG round trip)
    views = [_colour_embed(im[None, :, ::-1] if f else im[None])[0] for im in imgs[:2] for f in (False, True)]
    assert xnorm == pytest.approx(np.mean([np.linalg.norm(v) for v in views]), rel=1e-12)
    r = verify(ps, _colour_embed, batch_size=7)
    assert r.accuracy == 1.0 and r.n_pairs == 20 and r.auc == 1.0


def test_lfw_pairs_view2_ten_folds():
    ps = read_lfw_pairs(shared_file("data/verification/lfw_pairs.txt"), image_root="/lfw")
    assert len(ps) == 6000
    for k in range(10):
        sel = ps.folds == k
        assert sel.sum() == 600
        assert ps.issame[sel].sum() == 300
        assert ps.issame[sel][:300].all() and not ps.issame[sel][300:].any()
    first = ps.items[ps.pairs[0, 0]], ps.items[ps.pairs[0, 1]]
    assert first == ("/lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg", "/lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg")
    mismatched = ps.items[ps.pairs[300, 0]], ps.items[ps.pairs[300, 1]]
    assert mismatched == (
        "/lfw/Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg",
        "/lfw/Dean_Barker/Dean_Barker_0001.jpg",
    )


def test_lfw_pairs_malformed(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("1 1\nA 1 2\nA 1 2\n")
    with pytest.raises(ConfigError, match="mismatched"):
        read_lfw_pairs(p)
    p.write_text("2 1\nA 1 2\n")
    with pytest.raises(ConfigError, match="header"):
        read_lfw_pairs(p)


def test_deepface_master_csv():
    csv_path = shared_file("data/verification/deepface/master.csv")
    ps = read_csv_pairs(csv_path)
    lines = csv_path.read_text().strip().splitlines()[1:]
    assert len(ps) == len(lines)
    assert ps.n_genuine == sum(ln.rsplit(",", 1)[1].strip().lower() == "yes" for ln in lines)
    assert ps.items[ps.pairs[0, 0]].endswith("img20.jpg")
    assert ps.n_genuine > 0 and ps.n_impostor > 0


def test_csv_other_column_names(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("img1,img2,label\na.jpg,b.jpg,1\na.jpg,c.jpg,0\n")
    ps = read_csv_pairs(p)
    assert ps.issame.tolist() == [True, False] and len(ps.items) == 3
    p.write_text("left,right,label\na.jpg,b.jpg,maybe\n")
    with pytest.raises(ConfigError, match="maybe"):
        read_csv_pairs(p)
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(ConfigError, match="column"):
        read_csv_pairs(p)


def test_identity_folders_genuine_and_seeded_impostors(tmp_path):
    for person, n in (("ann", 3), ("bob", 2), ("cid", 1)):
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"x")
    a = identity_folder_pairs(tmp_path, seed=1)
    b = identity_folder_pairs(tmp_path, seed=1)
    assert a.n_genuine == 3 + 1  # C(3,2) + C(2,2)
    assert a.n_impostor == 4
    assert np.array_equal(a.pairs, b.pairs)
    owner = [p.split("/")[-2] for p in a.items]
    for (i, j), same in zip(a.pairs, a.issame):
        assert (owner[i] == owner[j]) == same
    imp = {tuple(sorted(p)) for p in a.pairs[~a.issame].tolist()}
    assert len(imp) == 4  # no repeated impostor pair
    c = identity_folder_pairs(tmp_path, n_impostors=100)
    assert c.n_impostor == 6 * 5 // 2 - 4  # capped at every cross-identity pair
