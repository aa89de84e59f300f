"""PyTorch checkpoints (``torch.save`` files) read into numpy arrays without torch.

Two container formats exist, and this reader handles both:

* **zip** (``torch.save`` since PyTorch 1.6): a zip archive with one top-level folder holding
  ``data.pkl`` (the pickled object), ``data/<key>`` (one raw storage per key), ``byteorder``
  (``little`` or ``big``; absent in files before 1.10, which are little-endian) and ``version``.
  A storage is referenced from the pickle by the persistent id
  ``("storage", <storage type>, key, location, numel)``.
* **legacy** (before 1.6, and ``_use_new_zipfile_serialization=False``): five things one after
  another in one file: the pickled magic number ``0x1950a86a20f9469cfc6c``, the protocol version
  ``1001``, a ``sys_info`` dict (``little_endian``, type sizes), the pickled object, the pickled
  list of storage keys; then, per key in that order, an ``int64`` element count and the raw
  elements. The persistent id is ``("storage", <storage type>, key, location, numel,
  view_metadata)``, where ``view_metadata`` is ``None`` or ``(view_key, offset, numel)``.

Tensors are pickled as calls of ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, backward_hooks[, metadata])`` (``_rebuild_parameter`` wraps one for
``nn.Parameter``). Every pickle goes through :class:`~facelab.convert.safe_pickle.RestrictedUnpickler`
with :data:`TORCH_GLOBALS`, an allow-list that maps torch's globals to small replacements here
which build numpy arrays; any other global (``os.system``, ``builtins.eval``, ...) raises
:class:`~facelab.convert.safe_pickle.UnsafePickleError` before anything is called.

Element types map to numpy's (``FloatStorage`` → ``float32``, ``HalfStorage`` → ``float16``,
``LongStorage`` → ``int64``, ``BoolStorage`` → ``bool``, ...). numpy has no ``bfloat16``:
``BFloat16Storage`` tensors are widened to ``float32``, which represents every bfloat16 value
exactly. Tensors come back as C-contiguous arrays that own their memory, with the tensor's
shape (strides and storage offsets applied), in native byte order.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.safe_pickle import RestrictedUnpickler, UnsafePickleError
from facelab.errors import ModelError, ModelNotFoundError

__all__ = [
    "TORCH_GLOBALS",
    "LEGACY_MAGIC",
    "StateDict",
    "load_torch_checkpoint",
    "load_state_dict",
]

_logger = logging.getLogger(__name__)

#: First pickled value of a legacy (non-zip) ``torch.save`` file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: Storage class name → numpy element type (``BFloat16Storage`` is read as ``uint16``, then widened).
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class _Inert:
    """Base of the stand-ins below: a pickle may not set their attributes (``BUILD`` is refused)."""

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"a pickle tried to set the state of a {type(self).__name__}")


class _StorageType(_Inert):
    """Stands for one of torch's storage classes (``torch.FloatStorage``, ...) in a pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bfloat16 = name == "BFloat16Storage"
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _Storage(_Inert):
    """A storage's elements (a 1-D numpy array), filled when its bytes are read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int) -> None:
        self.type = storage_type
        self.key = key
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView(_Inert):
    """A legacy-format view: ``numel`` elements of ``root`` from element ``offset``."""

    def __init__(self, root: _Storage, offset: int, numel: int) -> None:
        self.root, self.offset, self.numel = root, offset, numel


class _TensorRef(_Inert):
    """A tensor to build once its storage's bytes are known."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, (_Storage, _StorageView)):
            raise UnsafePickleError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
        self.storage = storage
        self.offset = _int(offset, "storage offset")
        self.size = tuple(_int(v, "size") for v in _seq(size, "size"))
        self.stride = tuple(_int(v, "stride") for v in _seq(stride, "stride"))
        if len(self.size) != len(self.stride):
            raise ModelError(f"tensor with size {self.size} but stride {self.stride}")

    def build(self, what: str) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.root, offset + storage.offset
        base = storage.data
        if base is None:
            raise ModelError(f"{what}: storage {storage.key!r} has no data in the file")
        if any(s == 0 for s in self.size):
            out = np.zeros(self.size, dtype=base.dtype)
        else:
            last = offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
            if offset < 0 or min(self.stride, default=0) < 0 or last >= len(base):
                raise ModelError(
                    f"{what}: tensor (offset {offset}, size {self.size}, stride {self.stride}) reaches past its "
                    f"storage of {len(base)} elements"
                )
            item = base.dtype.itemsize
            view = np.lib.stride_tricks.as_strided(
                base[offset:], shape=self.size, strides=[st * item for st in self.stride], writeable=False
            )
            out = np.array(view, order="C")
        if storage.type.bfloat16:
            out = (out.astype(np.uint32) << 16).view(np.float32).copy()
        return out.astype(out.dtype.newbyteorder("="), copy=False)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafePickleError(f"tensor {what} is a {type(value).__name__}, not an integer")
    return value


def _seq(value: Any, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise UnsafePickleError(f"tensor {what} is a {type(value).__name__}, not a tuple")
    return tuple(value)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> _TensorRef:
    # rest: requires_grad, backward_hooks and (newer files) metadata; none matters for weights
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *rest: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"parameter rebuilt from a {type(data).__name__}, not a tensor")
    return data


class _TensorClass(_Inert):
    """Stands for ``torch.Tensor`` / ``torch.nn.Parameter`` as the type argument of ``_rebuild_from_type_v2``."""


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter) or new_type is not _TensorClass:
        raise UnsafePickleError("_rebuild_from_type_v2 with something other than a plain tensor")
    return func(*_seq(args, "arguments"))


#: The allow-list for PyTorch checkpoints: torch's rebuild functions and storage classes mapped to
#: this module's replacements, plus ``collections.OrderedDict`` (the type of every ``state_dict``).
TORCH_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorClass,
    ("torch.nn.parameter", "Parameter"): _TensorClass,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _CheckpointUnpickler(RestrictedUnpickler):
    """The restricted unpickler plus torch's persistent ids for storages."""

    def __init__(self, file: Any, what: str, legacy: bool) -> None:
        super().__init__(file, TORCH_GLOBALS, what)
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle protocol
        if not isinstance(pid, tuple) or not pid:
            raise UnsafePickleError(f"{self._what}: unexpected persistent id {type(pid).__name__}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) != (6 if self.legacy else 5):
            raise UnsafePickleError(f"{self._what}: unsupported persistent id {kind!r} with {len(pid) - 1} fields")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._what}: storage of type {type(storage_type).__name__}")
        key = str(key)
        numel = _int(numel, "storage size")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, key, numel)
        view = pid[5] if self.legacy else None
        if view is None:
            return storage
        _view_key, offset, view_numel = _seq(view, "view")
        return _StorageView(storage, _int(offset, "view offset"), _int(view_numel, "view size"))


def _resolve(obj: Any, what: str) -> Any:
    """Replace every :class:`_TensorRef` inside dicts, lists and tuples by its numpy array."""
    if isinstance(obj, _TensorRef):
        return obj.build(what)
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v, what)
        if hasattr(obj, "__dict__") and isinstance(out, collections.OrderedDict):
            out.__dict__.update(obj.__dict__)  # e.g. a state_dict's _metadata
        return out
    if isinstance(obj, list):
        return [_resolve(v, what) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, what) for v in obj)
    return obj


def _unpickle(data: Any, what: str, legacy: bool) -> tuple[Any, dict[str, _Storage]]:
    file = data if hasattr(data, "read") else io.BytesIO(data)
    unpickler = _CheckpointUnpickler(file, what, legacy)
    try:
        obj = unpickler.load()
    except (UnsafePickleError, ModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unreadable file
        raise ModelError(f"{what}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    return obj, unpickler.storages


def _plain_load(file: Any, what: str) -> Any:
    """One small pickle of the legacy header (no globals at all allowed)."""
    try:
        return RestrictedUnpickler(file, {}, what).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{what}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def _load_zip(path: Path, what: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{what}: not a readable zip checkpoint: {exc}") from exc
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelError(f"{what}: a zip checkpoint needs one <folder>/data.pkl, found {pickles or 'none'}")
        prefix = pickles[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise ModelError(f"{what}: unknown byteorder {order!r}")
        obj, storages = _unpickle(archive.read(pickles[0]), what, legacy=False)
        for key, storage in storages.items():
            record = f"{prefix}data/{key}"
            if record not in names:
                raise ModelError(f"{what}: storage record {record} is missing")
            raw = archive.read(record)
            dtype = storage.type.dtype.newbyteorder("<" if order == "little" else ">")
            if len(raw) < storage.numel * dtype.itemsize:
                raise ModelError(
                    f"{what}: storage {key} holds {len(raw)} bytes, needs {storage.numel * dtype.itemsize}"
                )
            storage.data = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    return _resolve(obj, what)


def _load_legacy(path: Path, what: str) -> Any:
    with open(path, "rb") as file:
        if _plain_load(file, what) != LEGACY_MAGIC:
            raise ModelError(f"{what}: not a PyTorch checkpoint (no zip archive, no legacy magic number)")
        version = _plain_load(file, what)
        if version != _LEGACY_PROTOCOL:
            raise ModelError(f"{what}: unsupported legacy protocol version {version!r}")
        sys_info = _plain_load(file, what)
        little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
        obj, storages = _unpickle(file, what, legacy=True)
        keys = _plain_load(file, what)
        if not isinstance(keys, list):
            raise ModelError(f"{what}: storage key list is a {type(keys).__name__}")
        order = "<" if little else ">"
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise ModelError(f"{what}: storage {key!r} is listed but never used")
            head = file.read(8)
            if len(head) != 8:
                raise ModelError(f"{what}: file ends before storage {key!r}")
            (numel,) = struct.unpack(order + "q", head)
            if numel != storage.numel:
                raise ModelError(f"{what}: storage {key!r} has {numel} elements, the pickle says {storage.numel}")
            dtype = storage.type.dtype.newbyteorder(order)
            raw = file.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise ModelError(f"{what}: file ends inside storage {key!r}")
            storage.data = np.frombuffer(raw, dtype=dtype)
    return _resolve(obj, what)


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` file (zip or legacy format) with tensors as numpy arrays; torch is not needed.

    Args:
        path: the checkpoint.

    Returns:
        The saved object with every tensor replaced by a C-contiguous numpy array of its shape
        and element type (dicts, ``OrderedDict`` s, lists, tuples and plain values kept).

    Raises:
        ModelNotFoundError: the file does not exist.
        UnsafePickleError: the pickle asks for a global outside :data:`TORCH_GLOBALS` (nothing of
            it is called).
        ModelError: the file is not a readable checkpoint (the message says what is wrong).

    Example:
        >>> load_torch_checkpoint("missing.pth")
        Traceback (most recent call last):
        ...
        facelab.errors.ModelNotFoundError: PyTorch checkpoint not found: missing.pth
    """
    path = Path(path)
    what = str(path)
    if not path.is_file():
        raise ModelNotFoundError(f"PyTorch checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        return _load_zip(path, what)
    return _load_legacy(path, what)


def load_state_dict(path: str | os.PathLike, strip_prefix: str = "module.") -> dict[str, np.ndarray]:
    """The ``state_dict`` of a checkpoint as ``{name: array}``, in the file's order.

    A checkpoint that is a dict with a ``"state_dict"`` entry (a training checkpoint) gives that
    entry. ``strip_prefix`` is removed from every name that starts with it (``DataParallel``
    saves names as ``module.<name>``).

    Raises:
        ModelError: the checkpoint is not a dict of tensors (and see :func:`load_torch_checkpoint`).
    """
    obj = load_torch_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"{path}: not a state_dict (the file holds a {type(obj).__name__})")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ModelError(f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key[len(strip_prefix) :] if strip_prefix and key.startswith(strip_prefix) else key
        out[name] = value
    return out


class StateDict:
    """A ``state_dict`` read by a converter, which checks that every tensor was used.

    Converters ask for tensors by PyTorch's names (``"conv1.weight"``, ``"bn.running_mean"``) and
    get ``float32`` arrays; :meth:`check_all_used` then proves that the graph consumed the whole
    checkpoint (a tensor left over means the network definition does not match the file).

    Args:
        tensors: name → array (see :func:`load_state_dict`).
        source: the file, for error messages.

    Example:
        >>> sd = StateDict({"fc.weight": np.ones((2, 3)), "fc.bias": np.zeros(2)}, "doctest")
        >>> sd["fc.weight"].shape, sd.unused()
        ((2, 3), ['fc.bias'])
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str) -> None:
        self.tensors = dict(tensors)
        self.source = source
        self._used: set[str] = set()

    @classmethod
    def load(cls, path: str | os.PathLike, strip_prefix: str = "module.") -> StateDict:
        """:func:`load_state_dict` of ``path``."""
        return cls(load_state_dict(path, strip_prefix), str(path))

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise ModelError(f"{self.source}: the checkpoint has no tensor {name!r}")
        self._used.add(name)
        return np.asarray(self.tensors[name], dtype=np.float32)

    def batchnorm(self, prefix: str, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, shift)`` of an eval-mode ``BatchNorm`` at ``prefix``: ``y = x * scale + shift``.

        Computed in float64 from ``weight``, ``bias``, ``running_mean`` and ``running_var``
        (``num_batches_tracked`` is marked used).
        """
        gamma = self[f"{prefix}.weight"].astype(np.float64)
        beta = self[f"{prefix}.bias"].astype(np.float64)
        mean = self[f"{prefix}.running_mean"].astype(np.float64)
        var = self[f"{prefix}.running_var"].astype(np.float64)
        self._used.add(f"{prefix}.num_batches_tracked")
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale

    def conv_bn(self, conv: str, bn: str, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
        """A convolution (``conv.weight``, optional ``conv.bias``) with the ``BatchNorm`` after it folded in.

        Returns:
            ``(weight, bias)``: ``float32`` ``(out, in / groups, kh, kw)`` and ``(out,)``.
        """
        weight = self[f"{conv}.weight"].astype(np.float64)
        bias = self[f"{conv}.bias"].astype(np.float64) if f"{conv}.bias" in self else np.zeros(len(weight))
        scale, shift = self.batchnorm(bn, eps)
        folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        return folded.astype(np.float32), (bias * scale + shift).astype(np.float32)

    def unused(self) -> list[str]:
        """Names not asked for yet, in the file's order."""
        return [k for k in self.tensors if k not in self._used]

    def check_all_used(self, what: str) -> None:
        """Raise :class:`~facelab.errors.ModelError` if a tensor was not consumed by the converter.

        Args:
            what: the network, for the message.
        """
        left = self.unused()
        if left:
            raise ModelError(f"{self.source}: not a {what} checkpoint: {len(left)} tensors unused ({left[:5]} ...)")
