"""The torch-free PyTorch checkpoint reader: real checkpoints equal torch.load exactly, unsafe pickles never run."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from facelab.convert import StateDict, UnsafePickleError, load_state_dict, load_torch_checkpoint
from facelab.convert.torch_reader import LEGACY_MAGIC
from facelab.errors import ModelError, ModelNotFoundError
from shared_data import require_module, shared_file

torch = require_module("torch")

REAL = [
    "models/silentface/2.7_80x80_MiniFASNetV2.pth",
    "models/silentface/4_0_0_80x80_MiniFASNetV1SE.pth",
    "models/retinaface_biubug6/mobilenet0.25_Final.pth",
    "models/retinaface_biubug6/RBF_Final.pth",
    "models/retinaface_biubug6/slim_Final.pth",
]


def _as_numpy(t):
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def assert_same_as_torch(path, got):
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert type(got) is type(ref)
    assert list(got) == list(ref)  # same keys, same order
    for key, value in ref.items():
        want = _as_numpy(value)
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        assert np.array_equal(got[key], want, equal_nan=True), key
        assert got[key].flags.c_contiguous and got[key].flags.owndata, key


@pytest.mark.parametrize("relative", REAL)
def test_real_legacy_checkpoints_equal_torch_load(relative):
    path = shared_file(relative)
    assert not zipfile.is_zipfile(path)  # these files are in the legacy (pre-1.6) format
    got = load_torch_checkpoint(path)
    assert_same_as_torch(path, got)
    assert hasattr(got, "_metadata")  # the state_dict's version metadata survives


@pytest.mark.parametrize("relative", REAL)
def test_real_checkpoints_resaved_as_zip_equal_torch_load(relative, tmp_path):
    state = torch.load(shared_file(relative), map_location="cpu", weights_only=True)
    out = tmp_path / "resaved.pth"
    torch.save(state, out)
    assert zipfile.is_zipfile(out)
    assert_same_as_torch(out, load_torch_checkpoint(out))


def _crafted():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict()
    state["transposed"] = base.t()  # non-contiguous view
    state["slice"] = base[1:, 2:5]  # storage offset
    state["shared"] = base  # the same storage again
    state["half"] = torch.linspace(-2, 2, 7, dtype=torch.float16)
    state["bfloat16"] = torch.tensor([1.5, -3.25, 1e30], dtype=torch.bfloat16)
    state["double"] = torch.tensor([[1e-300, 3.0]], dtype=torch.float64)
    state["long"] = torch.tensor([-(2**40), 7])
    state["int"] = torch.tensor([1, -2], dtype=torch.int32)
    state["short"] = torch.tensor([3], dtype=torch.int16)
    state["char"] = torch.tensor([-5, 6], dtype=torch.int8)
    state["byte"] = torch.tensor([250], dtype=torch.uint8)
    state["bool"] = torch.tensor([True, False])
    state["scalar"] = torch.tensor(2.5)
    state["empty"] = torch.zeros(0, 3)
    state["param"] = torch.nn.Parameter(torch.ones(2, 2))
    state["nan"] = torch.tensor([float("nan"), float("inf")])
    return state


@pytest.mark.parametrize("zip_format", [True, False])
def test_crafted_tensors_every_dtype_and_layout(tmp_path, zip_format):
    out = tmp_path / "crafted.pt"
    torch.save(_crafted(), out, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(out) == zip_format
    got = load_torch_checkpoint(out)
    assert_same_as_torch(out, got)
    assert got["bfloat16"].dtype == np.float32  # widened, exactly


@pytest.mark.parametrize("zip_format", [True, False])
def test_training_checkpoint_layout_and_prefix(tmp_path, zip_format):
    out = tmp_path / "ckpt.pt"
    sd = collections.OrderedDict([("module.a.weight", torch.ones(2)), ("module.b", torch.zeros(1))])
    torch.save(
        {"state_dict": sd, "epoch": 3, "names": ["x", ("y", 1.5)]}, out, _use_new_zipfile_serialization=zip_format
    )
    whole = load_torch_checkpoint(out)
    assert whole["epoch"] == 3 and whole["names"] == ["x", ("y", 1.5)]
    assert list(load_state_dict(out)) == ["a.weight", "b"]
    assert list(load_state_dict(out, strip_prefix="")) == ["module.a.weight", "module.b"]


# --------------------------------------------------------------------------------- unsafe pickles


class _Call:
    """Pickles as a call of ``func(*args)`` (what a malicious checkpoint does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path):
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": _Call(os.system, cmd),
        "builtins.eval": _Call(eval, code),
        "builtins.exec": _Call(exec, code),
        "subprocess.Popen": _Call(subprocess.Popen, ["touch", str(marker)]),
        "subprocess.check_call": _Call(subprocess.check_call, ["touch", str(marker)]),
    }


def _legacy_file(path: Path, payload) -> None:
    with open(path, "wb") as fh:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        pickle.dump({"weight": payload}, fh, protocol=2)
        pickle.dump([], fh, protocol=2)


def _zip_file(path: Path, payload) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"weight": payload}, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize(
    "kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "subprocess.check_call"]
)
@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, kind, container):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[kind]
    path = tmp_path / f"evil_{container}.pth"
    (_legacy_file if container == "legacy" else _zip_file)(path, payload)
    with pytest.raises(UnsafePickleError, match="refusing to load the global") as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)
    assert f".{payload.func.__name__} " in str(info.value)  # names the refused global
    assert not marker.exists()


def test_the_crafted_payload_really_runs_without_the_restriction(tmp_path):
    """The control for the test above: plain pickle does execute such a file."""
    marker = tmp_path / "ran"
    data = pickle.dumps({"weight": _payloads(marker)["builtins.exec"]}, protocol=2)
    pickle.loads(data)  # noqa: S301 - deliberately unsafe, on our own bytes
    assert marker.exists()


def test_unsafe_global_inside_torch_shaped_reduce_is_refused(tmp_path):
    """A real checkpoint whose tensor rebuild is swapped for another global (the classic trojaned .pth)."""
    buf = io.BytesIO()
    torch.save(collections.OrderedDict(w=torch.ones(2)), buf)
    original = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    data = original.read("archive/data.pkl")
    assert b"torch._utils\n_rebuild_tensor_v2" in data
    evil = data.replace(b"torch._utils\n_rebuild_tensor_v2", b"posix\nsystem")
    path = tmp_path / "trojan.pth"
    with zipfile.ZipFile(path, "w") as zf:
        for name in original.namelist():
            zf.writestr(name, evil if name.endswith("data.pkl") else original.read(name))
    with pytest.raises(UnsafePickleError, match="posix.system"):
        load_torch_checkpoint(path)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_torch_checkpoint(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(ModelError, match="junk.pth"):
        load_torch_checkpoint(junk)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(1000)}, good, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelError, match="ends inside storage"):
        load_torch_checkpoint(cut)
    not_sd = tmp_path / "list.pth"
    torch.save([1, 2], not_sd)
    with pytest.raises(ModelError, match="not a state_dict"):
        load_state_dict(not_sd)


def test_legacy_header_with_a_global_is_refused(tmp_path):
    path = tmp_path / "header.pth"
    with open(path, "wb") as fh:
        pickle.dump(_Call(os.system, "true"), fh, protocol=2)
    with pytest.raises(UnsafePickleError):
        load_torch_checkpoint(path)


def test_state_dict_helper_folds_batchnorm_and_tracks_use():
    rng = np.random.default_rng(0)
    conv = torch.nn.Conv2d(3, 4, 3, bias=True)
    bn = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    tensors = {f"c.{k}": v.numpy() for k, v in conv.state_dict().items()}
    tensors.update({f"b.{k}": v.numpy() for k, v in bn.state_dict().items()})
    tensors["extra"] = np.zeros(1, np.float32)
    sd = StateDict(tensors, "test")
    weight, bias = sd.conv_bn("c", "b")
    x = torch.from_numpy(rng.normal(size=(1, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        want = bn(conv(x)).numpy()
    got = torch.nn.functional.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sd.unused() == ["extra"]
    with pytest.raises(ModelError, match="1 tensors unused"):
        sd.check_all_used("test network")
    with pytest.raises(ModelError, match="no tensor 'nope'"):
        sd["nope"]


def test_reading_and_converting_need_no_torch(tmp_path):
    """In a process where ``import torch`` fails, both conversions still work (they need only onnx)."""
    mnet = shared_file("models/retinaface_biubug6/mobilenet0.25_Final.pth")
    v2 = shared_file("models/silentface/2.7_80x80_MiniFASNetV2.pth")
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
from facelab.convert import load_state_dict
from facelab.convert.torch_reader import StateDict
from facelab.detection.retinaface_graph import convert_retinaface
from facelab.liveness.minifasnet import build_minifasnet_onnx
card = convert_retinaface({str(mnet)!r}, {str(tmp_path / "r.onnx")!r})
data = build_minifasnet_onnx(StateDict.load({str(v2)!r}), "minifasnet_v2")
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print(card.name, len(data) > 1_000_000)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["retinaface_mnet025.biubug6", "True"]
    assert (tmp_path / "r.json").is_file()


def test_legacy_big_endian_storage(tmp_path):
    """A legacy file from a big-endian machine (``sys_info["little_endian"]`` False) is byte-swapped."""
    little = tmp_path / "le.pth"
    torch.save({"w": torch.tensor([1.5, -2.0, 3.25])}, little, _use_new_zipfile_serialization=False)
    with open(little, "rb") as fh:
        magic, protocol, sys_info = pickle.load(fh), pickle.load(fh), pickle.load(fh)
        rest = fh.read()
    assert sys_info["little_endian"] and rest[-20:-12] == struct.pack("<q", 3)
    path = tmp_path / "be.pth"
    with open(path, "wb") as fh:
        for header in (magic, protocol, {**sys_info, "little_endian": False}):
            pickle.dump(header, fh, protocol=2)
        fh.write(rest[:-20] + struct.pack(">q", 3) + np.array([1.5, -2.0, 3.25], ">f4").tobytes())
    got = load_torch_checkpoint(path)["w"]
    assert got.dtype == np.float32 and got.dtype.isnative
    assert got.tolist() == [1.5, -2.0, 3.25]
