"""Tiny CPU training runs: config handling, loss goes down, kill-and-resume is bit-exact, CLI, export."""

from __future__ import annotations

import numpy as np
import pytest

import shared_data
from small_dataset import unpack_identity_folders

torch = shared_data.require_module("torch")
shared_data.require_module("yaml")

from facelab.cli import main  # noqa: E402
from facelab.errors import ConfigError  # noqa: E402
from facelab.train.config import TrainConfig, load_config  # noqa: E402
from facelab.train.data import ShardSampler  # noqa: E402
from facelab.train.engine import TrainingError, poly_warmup_lr, train  # noqa: E402

TINY = [
    "network=iresnet18",
    "network_kwargs={width: 4}",
    "input_size=32",
    "embedding_size=16",
    "scale=16.0",
    "margin_list=[1.0,0.0,0.4]",
    "sample_rate=0.5",
    "batch_size=8",
    "num_epoch=2",
    "warmup_epoch=1",
    "synthetic=true",
    "synthetic_length=48",
    "num_classes=12",
    "num_workers=0",
    "frequent=0",
    "lr=0.05",
    "flip=true",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("network: mobilefacenet\nlr: 0.02\nmargin_list: [1.0, 0.0, 0.4]\n")
    cfg = load_config(path, ["lr=0.5", "fp16=true", "val_targets=[lfw,cfp_fp]"])
    assert (cfg.network, cfg.lr, cfg.fp16, cfg.margin_list, cfg.val_targets) == (
        "mobilefacenet",
        0.5,
        True,
        [1.0, 0.0, 0.4],
        ["lfw", "cfp_fp"],
    )
    assert cfg.batch_size == TrainConfig().batch_size == 128
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        load_config(path, ["lrr=1"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(path, ["batch_size=abc"])
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(path, ["optimizer=rmsprop"])


def test_poly_lr_with_warmup():
    assert poly_warmup_lr(0, 0.1, 10, 110) == 0.0
    assert poly_warmup_lr(5, 0.1, 10, 110) == pytest.approx(0.05)
    assert poly_warmup_lr(10, 0.1, 10, 110) == pytest.approx(0.1)
    assert poly_warmup_lr(60, 0.1, 10, 110) == pytest.approx(0.05)
    assert poly_warmup_lr(110, 0.1, 10, 110) == 0.0


def test_shard_sampler_partitions_and_resumes():
    a = ShardSampler(20, 3, rank=0, world_size=2, seed=1)
    b = ShardSampler(20, 3, rank=1, world_size=2, seed=1)
    ia, ib = list(a), list(b)
    assert len(ia) == len(ib) == 9 and not set(ia) & set(ib)
    a.set_position(0, 4)
    assert list(a) == ia[4:]
    a.set_epoch(1)
    assert list(a) != ia


def _state(out):
    return torch.load(out / "checkpoint_rank0.pt", weights_only=False)


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
    full = train(load_config(None, TINY + [f"output={tmp_path / 'full'}"]))
    assert full.steps == 12
    part = train(load_config(None, TINY + [f"output={tmp_path / 'part'}", "max_steps=5"]))
    assert part.steps == 5
    resumed = train(load_config(None, TINY + [f"output={tmp_path / 'part'}"]))
    assert resumed.steps == 12
    assert resumed.losses == full.losses[5:]
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    for key in ("backbone", "partial_fc"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return unpack_identity_folders(tmp_path_factory.mktemp("small"))[0]


@pytest.mark.slow
def test_loss_goes_down_on_small_real_set(small_folder, tmp_path):
    from facelab.train.recordio import pack_image_folder

    pack_image_folder(small_folder, tmp_path / "data" / "train")
    cfg = load_config(
        None,
        [
            "network=iresnet18",
            "network_kwargs={width: 4}",
            "embedding_size=32",
            "scale=16.0",
            "batch_size=5",
            "num_epoch=8",
            "warmup_epoch=0",
            f"rec={tmp_path / 'data'}",
            "num_workers=0",
            "frequent=0",
            "lr=0.1",
            f"output={tmp_path / 'out'}",
            "margin_list=[1.0,0.0,0.2]",
        ],
    )
    res = train(cfg)
    assert res.steps == 16
    first, last = np.mean(res.losses[:4]), np.mean(res.losses[-4:])
    assert last < 0.7 * first, (first, last)


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "nan"
    train(load_config(None, TINY + [f"output={out}", "max_steps=2", "num_epoch=1", "warmup_epoch=0"]))
    good = (out / "checkpoint_rank0.pt").read_bytes()
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*Last good checkpoint: .*step 2"):
        train(load_config(None, TINY + [f"output={out}", "num_epoch=1", "warmup_epoch=0", "lr=1e30"]))
    assert (out / "checkpoint_rank0.pt").read_bytes() == good


@pytest.mark.slow
def test_cli_smoke_config_and_export(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "configs/smoke_cpu.yaml",
            f"output={out}",
            "num_epoch=1",
            "synthetic_length=32",
            "input_size=112",
            "batch_size=8",
            "warmup_epoch=0",
        ]
    )
    assert rc == 0
    assert (out / "model.pt").is_file() and (out / "checkpoint_rank0.pt").is_file()
    onnx_path = tmp_path / "m.onnx"
    rc = main(
        [
            "train",
            "export",
            str(out / "model.pt"),
            str(onnx_path),
            "--license",
            "CC-BY-4.0",
            "--train-data",
            "synthetic",
        ]
    )
    assert rc == 0
    from facelab.zoo.card import ModelCard

    card = ModelCard.load(tmp_path / "m.json")
    assert (card.task, card.arch, card.embedding_dim, card.input_size) == ("recognition", "iresnet18", 64, (112, 112))
    assert (card.color_order, card.mean, card.std, card.align_template) == (
        "RGB",
        (127.5,) * 3,
        (127.5,) * 3,
        "arcface_112_5pt",
    )
    assert card.license == "CC-BY-4.0" and card.train_data == "synthetic"
    import hashlib

    assert card.files[0].sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    # parity on a real image: torch backbone vs ONNX Runtime, through the core's to_tensor
    import onnxruntime as ort

    from facelab.io.image import load_image
    from facelab.ops.normalize import to_tensor
    from facelab.train.export import load_backbone

    img = load_image(shared_data.shared_file("data/images/Tom_Hanks_54745.png"))
    assert img.shape == (112, 112, 3)
    x = to_tensor(img, card.normalization)
    x = np.concatenate([x, x[..., ::-1]])  # batch of 2: the image and its mirror
    model, _ = load_backbone(out)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == (2, 64)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    from facelab.recognition import create_recognizer

    rec = create_recognizer(card, path=onnx_path)
    emb = rec.embed(np.stack([img, img[:, ::-1]]))
    np.testing.assert_allclose(emb, ref, atol=1e-4)

    # The exported file and its card, dropped into a pack folder beside a detector, serve as the
    # pack's recogniser in FaceAnalyzer (the card is read, not guessed from the signature).
    from facelab.pipeline import FaceAnalyzer

    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "det_500m.onnx").symlink_to(shared_data.shared_file("models/insightface/det_500m.onnx"))
    for name in ("m.onnx", "m.json"):
        (pack / name).write_bytes((tmp_path / name).read_bytes())
    analyzer = FaceAnalyzer(pack, det_size=(640, 640))
    assert analyzer.cards["recognition"] == card
    faces = analyzer.analyze(shared_data.shared_file("data/images/t1.jpg"))
    assert len(faces) == 6
    assert all(f.embedding.shape == (64,) and f.model == card.name for f in faces)


def test_cli_export_bad_checkpoint_is_clear_error(tmp_path, capsys):
    rc = main(["train", "export", str(tmp_path / "nope.pt"), str(tmp_path / "o.onnx"), "--license", "MIT"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_import_facelab_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, facelab, facelab.cli; facelab.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_subcenters_are_dropped_at_the_given_epoch_and_resume_keeps_shapes(tmp_path):
    over = TINY + [f"output={tmp_path}", "num_subcenters=3", "subcenter_drop_epoch=1", "margin_list=[1.0,0.5,0.0]"]
    part = train(load_config(None, over + ["max_steps=8"]))  # 6 steps per epoch: stops inside epoch 1
    assert part.steps == 8
    state = _state(tmp_path)
    assert state["partial_fc"]["weight"].shape == (12, 16)  # 12 classes x 1 centre (was 36 rows)
    resumed = train(load_config(None, over))
    assert resumed.steps == 12 and all(np.isfinite(resumed.losses))
    assert _state(tmp_path)["partial_fc"]["weight"].shape == (12, 16)


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_train_resume_and_stay_in_sync(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "-m",
        "facelab",
        "train",
        "configs/smoke_cpu.yaml",
        f"output={out}",
        "num_epoch=1",
        "synthetic_length=128",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run(base + ["max_steps=2"], capture_output=True, text=True, env=env, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    assert torch.load(out / "checkpoint_rank1.pt", weights_only=False)["step"] == 2
    second = subprocess.run(base, capture_output=True, text=True, env=env, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("trained 4 steps") == 1  # rank 0 reports once
    s0 = torch.load(out / "checkpoint_rank0.pt", weights_only=False)
    s1 = torch.load(out / "checkpoint_rank1.pt", weights_only=False)
    assert s0["step"] == s1["step"] == 4 and s0["world_size"] == 2
    params = {name for name, _ in _named_params()}
    for name in params:  # the replicated backbone's parameters stay bit-identical across ranks
        assert torch.equal(s0["backbone"][name], s1["backbone"][name]), name
    # the class centres are sharded: 20 classes -> 10 per rank
    assert s0["partial_fc"]["weight"].shape[0] == s1["partial_fc"]["weight"].shape[0] == 10


def _named_params():
    from facelab.train.backbones import create_backbone

    return create_backbone("iresnet18", num_features=64, width=8, input_size=32).named_parameters()


def test_verification_during_training_and_in_the_exported_card(tmp_path):
    bin_path = shared_data.shared_file("data/verification/small_lfw.bin")
    out = tmp_path / "v"
    res = train(
        load_config(
            None, TINY + [f"output={out}", "num_epoch=1", "warmup_epoch=0", f"val_targets=[{bin_path}]", "verbose=3"]
        )
    )
    scores = res.verification["small_lfw"]
    from facelab.train.export import export_onnx, load_backbone
    from facelab.train.verification import verify_bin

    model = load_backbone(out)[0]
    # The score reported by train() is the one of the final (saved) weights.
    assert scores == verify_bin(model, bin_path, 32)
    assert scores["protocol"] == "facelab.eval" and scores["xnorm"] > 0
    local = verify_bin(model, bin_path, 32, use_eval=False)
    assert local["protocol"] == "local"
    acc, emb, imgs = _local_protocol_by_hand(model, bin_path, 32)
    assert local["acc"] == pytest.approx(acc, abs=1e-12)
    # accuracy over 10 pairs is coarse: check the embeddings it is computed from as well
    from facelab.train.verification import embed, load_bin

    images, _ = load_bin(bin_path, 32)
    assert np.abs(images.astype(int) - imgs.astype(int)).mean() < 1.0  # JPEG decoders may round differently
    np.testing.assert_allclose(embed(model, imgs), emb, atol=1e-5)
    card = export_onnx(out, tmp_path / "v.onnx", license="MIT")
    assert card.metrics["small_lfw"]["acc"] == scores["acc"]


def _local_protocol_by_hand(model, bin_path, size):
    """The fallback protocol written out from its description: OpenCV decode, RGB, (x - 127.5) / 127.5,
    normalize(f(x) + f(flip(x))), cosine per pair (2i, 2i + 1), 10 folds of consecutive pairs, each
    fold's threshold = first best of -1, -0.995, ... on the other folds (accept when cosine > t)."""
    import pickle

    import cv2

    with open(bin_path, "rb") as fh:
        bins, issame = pickle.load(fh, encoding="bytes")
    imgs = [cv2.imdecode(np.frombuffer(bytes(b), np.uint8), cv2.IMREAD_COLOR) for b in bins]
    imgs = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in imgs])
    x = torch.from_numpy((imgs[..., ::-1].astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2).contiguous()
    model.eval()
    with torch.no_grad():
        e = torch.nn.functional.normalize(model(x) + model(x.flip(3))).numpy()
    sims = np.sum(e[0::2] * e[1::2], axis=1)
    same = np.asarray(issame, bool)
    folds = np.array_split(np.arange(len(sims)), 10)
    grid = np.arange(-1.0, 1.0, 0.005)
    accs = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(sims)), test)
        best = grid[int(np.argmax([np.mean((sims[train] > t) == same[train]) for t in grid]))]
        accs.append(np.mean((sims[test] > best) == same[test]))
    return float(np.mean(accs)), e, imgs


def test_local_verification_accuracy_by_hand():
    from facelab.train.verification import verification_accuracy

    # 4 pairs, genuine (cos 1) and impostor (cos 0) alternating; each fold's training half fixes a separating threshold
    e = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1], [1, 0]], dtype=np.float32)
    acc, std = verification_accuracy(e, np.array([True, False, True, False]), folds=2)
    assert (acc, std) == (1.0, 0.0)


def test_vpl_training_runs_and_resumes_bit_identically(tmp_path):
    over = TINY + ["num_epoch=1", "warmup_epoch=0", "vpl=true", "vpl_start_iters=2", "vpl_allowed_delta=3"]
    full = train(load_config(None, over + [f"output={tmp_path / 'a'}"]))
    train(load_config(None, over + [f"output={tmp_path / 'b'}", "max_steps=3"]))
    resumed = train(load_config(None, over + [f"output={tmp_path / 'b'}"]))
    assert full.steps == resumed.steps == 6 and all(np.isfinite(full.losses))
    a, b = _state(tmp_path / "a")["partial_fc"], _state(tmp_path / "b")["partial_fc"]
    assert set(a) >= {"weight", "vpl_memory", "vpl_iters", "step"}
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_steps_the_optimizer_every_k_batches(tmp_path):
    over = TINY + ["num_epoch=1", "warmup_epoch=0", "gradient_acc=2", "sample_rate=1.0"]
    res = train(load_config(None, over + [f"output={tmp_path}", "max_steps=2"]))
    assert res.steps == 2
    opt_state = _state(tmp_path)["optimizer"]["state"]
    assert opt_state and all("momentum_buffer" in v for v in opt_state.values())
    one = train(load_config(None, over + [f"output={tmp_path / 'one'}", "max_steps=1"]))
    assert one.steps == 1 and not (tmp_path / "one" / "checkpoint_rank0.pt").exists()  # no optimizer step yet
