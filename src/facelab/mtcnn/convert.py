"""Convert the MTCNN weights of the PyPI package ``mtcnn==1.0.0`` to ONNX, and cache the results.

The package (ipazc/mtcnn, MIT) ships ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``: joblib
pickles (lz4) of each Keras model's ``get_weights()`` list. They are read with
:mod:`facelab.convert.joblib_reader` (no joblib, no TensorFlow, nothing executed) and rebuilt as
ONNX graphs with :class:`facelab.convert.GraphBuilder`, layer by layer as the package's Keras
models define them:

* ``Conv2D`` (``valid``) -> ``Conv``: Keras kernels ``(kh, kw, in, out)`` become ``(out, in, kh, kw)``;
* ``PReLU`` (one slope per channel) -> ``Relu(x) + slope * Min(x, 0)`` (the same values as a
  ``PRelu`` node, faster in ONNX Runtime);
* ``MaxPooling2D`` ``same`` -> ``MaxPool`` with ``auto_pad=SAME_UPPER`` (TensorFlow puts the odd
  padding row/column at the end; padding never wins the max), ``valid`` -> ``MaxPool``;
* R-Net/O-Net's ``Permute((2, 1, 3))`` + ``Flatten`` of an NHWC tensor (order ``w, h, c``) ->
  ``Transpose(0, 3, 2, 1)`` of our NCHW tensor + ``Flatten``;
* ``Dense`` -> ``Gemm`` (kernel ``(in, out)``); ``softmax`` -> ``Softmax`` over the class axis.

Graphs (input ``"input"``: ``(N, 3, H, W)`` ``float32``, RGB, ``(pixel - 127.5) / 128``):

* ``mtcnn_pnet.onnx``: dynamic ``H, W`` -> ``"reg"`` ``(N, 4, h, w)``, ``"prob"`` ``(N, 2, h, w)``
  with ``h = ceil((H - 2) / 2) - 4`` (likewise ``w``);
* ``mtcnn_rnet.onnx``: ``24 x 24`` -> ``"reg"`` ``(N, 4)``, ``"prob"`` ``(N, 2)``;
* ``mtcnn_onet.onnx``: ``48 x 48`` -> ``"reg"`` ``(N, 4)``, ``"points"`` ``(N, 10)``, ``"prob"`` ``(N, 2)``.

``prob[:, 1]`` is the face probability. Converted files are cached in
``$FACELAB_HOME/converted/`` with a card (source SHA-256, converter version, licence MIT,
source package) through :func:`facelab.convert.cached_conversion`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.convert.cache import cached_conversion, read_source
from facelab.convert.graph import GraphBuilder
from facelab.convert.joblib_reader import load_joblib
from facelab.errors import ModelError, ModelNotFoundError
from facelab.io.samples import package_dir

__all__ = [
    "CONVERTER_VERSION",
    "SOURCE_PACKAGE",
    "NETWORKS",
    "MTCNNFiles",
    "weights_path",
    "read_weights",
    "network_to_onnx",
    "convert_cached",
]

_logger = logging.getLogger(__name__)

#: Bumped whenever the converter's output changes; cached conversions of another version are rebuilt.
CONVERTER_VERSION = "3"
#: The PyPI distribution the weights come from.
SOURCE_PACKAGE = "mtcnn==1.0.0"
SOURCE_URL = "https://pypi.org/project/mtcnn/1.0.0/"
LICENSE = "MIT"
#: The three networks, in cascade order.
NETWORKS = ("pnet", "rnet", "onet")

# Layer plans: ("conv", out_channels) consumes kernel + bias + PReLU slope; ("pool", k, s, pad).
_Plan = Sequence[tuple[Any, ...]]
_PLANS: dict[str, dict[str, Any]] = {
    "pnet": {
        "body": [("conv",), ("pool", 2, 2, "same"), ("conv",), ("conv",)],
        "heads": ("reg", "prob"),
        "size": None,
    },
    "rnet": {
        "body": [("conv",), ("pool", 3, 2, "same"), ("conv",), ("pool", 3, 2, "valid"), ("conv",)],
        "heads": ("reg", "prob"),
        "size": 24,
    },
    "onet": {
        "body": [
            ("conv",),
            ("pool", 3, 2, "same"),
            ("conv",),
            ("pool", 3, 2, "valid"),
            ("conv",),
            ("pool", 2, 2, "same"),
            ("conv",),
        ],
        "heads": ("reg", "points", "prob"),
        "size": 48,
    },
}
_HEAD_WIDTH = {"reg": 4, "points": 10, "prob": 2}


@dataclass(frozen=True)
class MTCNNFiles:
    """The three converted networks and their cards (plain dicts, :class:`~facelab.zoo.card.ModelCard` layout)."""

    pnet: Path
    rnet: Path
    onet: Path
    cards: dict[str, dict[str, Any]]

    def paths(self) -> tuple[Path, Path, Path]:
        """``(pnet, rnet, onet)``."""
        return self.pnet, self.rnet, self.onet


def weights_path(network: str) -> Path:
    """Locate ``<network>.lz4`` inside the installed ``mtcnn`` package, without importing it.

    (Its ``__init__`` imports TensorFlow, which facelab never needs.)

    Raises:
        ModelNotFoundError: the package is not installed or lacks the file.
    """
    if network not in NETWORKS:
        raise ModelNotFoundError(f"unknown MTCNN network {network!r}; expected one of {NETWORKS}")
    folder = package_dir("mtcnn")
    if folder is None:
        raise ModelNotFoundError(
            "the MTCNN weights come from the PyPI package mtcnn==1.0.0, which is not installed; install it with: "
            "pip install 'facelab[open]' (or pip install mtcnn==1.0.0; TensorFlow is not needed)"
        )
    path = folder / "assets" / "weights" / f"{network}.lz4"
    if not path.is_file():
        raise ModelNotFoundError(f"{path.name} is missing from the installed mtcnn package ({path})")
    return path


def read_weights(data: bytes, network: str, what: str) -> list[np.ndarray]:
    """Decode one network's weight list and check it against the network's layout.

    Raises:
        ModelError: not a joblib list of float32 arrays with the shapes the network needs.
    """
    weights = load_joblib(data, what)
    if not isinstance(weights, list) or not all(isinstance(w, np.ndarray) for w in weights):
        raise ModelError(f"{what}: expected a list of numpy arrays (Keras get_weights()), got {type(weights).__name__}")
    expected = _expected_count(network)
    if len(weights) != expected:
        raise ModelError(f"{what}: {len(weights)} arrays, but MTCNN's {network} has {expected}")
    return [np.asarray(w, np.float32) for w in weights]


def _expected_count(network: str) -> int:
    plan = _PLANS[network]
    convs = sum(1 for step in plan["body"] if step[0] == "conv")
    dense = 0 if plan["size"] is None else 3  # hidden Dense kernel + bias + PReLU
    return 3 * convs + dense + 2 * len(plan["heads"])


def _take(weights: list[np.ndarray], index: int, ndim: int, what: str) -> np.ndarray:
    array = weights[index]
    if array.ndim != ndim:
        raise ModelError(f"{what}: weight #{index} has shape {array.shape}, expected {ndim} dimensions")
    return array


def network_to_onnx(weights: list[np.ndarray], network: str, what: str = "MTCNN weights") -> bytes:
    """Build the ONNX graph of one MTCNN network (see the module docstring).

    Args:
        weights: the Keras weight list, as :func:`read_weights` returns it.
        network: ``"pnet"``, ``"rnet"`` or ``"onet"``.
        what: the source, for error messages.

    Raises:
        ModelError: a weight has the wrong shape for the layer it feeds.
    """
    plan = _PLANS[network]
    g = GraphBuilder(f"converting the MTCNN {network}")
    x = "input"
    channels = 3
    i = 0
    for step in plan["body"]:
        if step[0] == "conv":
            kernel = _take(weights, i, 4, what)
            bias, slope = weights[i + 1].reshape(-1), weights[i + 2].reshape(-1)
            if kernel.shape[2] != channels or not (len(bias) == len(slope) == kernel.shape[3]):
                raise ModelError(f"{what}: convolution #{i} has kernel {kernel.shape} after {channels} channels")
            x = g.conv(x, kernel.transpose(3, 2, 0, 1), bias, prefix=f"{network}_conv")
            x = g.prelu(x, slope, prefix=f"{network}_prelu")
            channels = kernel.shape[3]
            i += 3
        else:
            _, k, s, pad = step
            attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s]}
            if pad == "same":
                attrs["auto_pad"] = "SAME_UPPER"
            x = g.node("MaxPool", [x], f"{network}_pool", **attrs)
    if plan["size"] is not None:
        x = g.node("Transpose", [x], f"{network}_permute", perm=[0, 3, 2, 1])  # NCHW -> N, W, H, C
        x = g.node("Flatten", [x], f"{network}_flatten", axis=1)
        kernel = _take(weights, i, 2, what)
        x = g.gemm(x, kernel, weights[i + 1].reshape(-1), prefix=f"{network}_fc")
        x = g.prelu(x, weights[i + 2].reshape(-1), rank=2, prefix=f"{network}_prelu")
        i += 3
    outputs = []
    for head in plan["heads"]:
        width = _HEAD_WIDTH[head]
        kernel, bias = weights[i], weights[i + 1].reshape(-1)
        if kernel.shape[-1] != width or len(bias) != width:
            raise ModelError(f"{what}: the {head} head has kernel {kernel.shape}, expected {width} outputs")
        if plan["size"] is None:
            y = g.conv(x, kernel.transpose(3, 2, 0, 1), bias, prefix=f"{network}_{head}")
        else:
            y = g.gemm(x, kernel, bias, prefix=f"{network}_{head}")
        if head == "prob":
            y = g.node("Softmax", [y], f"{network}_softmax", axis=1)
        dims = ["batch", width, "h", "w"] if plan["size"] is None else ["batch", width]
        outputs.append((g.rename(y, head), dims))
        i += 2
    size = plan["size"]
    input_dims = ["batch", 3, "height", "width"] if size is None else ["batch", 3, size, size]
    return g.finish(
        "input",
        input_dims,
        outputs,
        f"mtcnn_{network}",
        "facelab.mtcnn.convert",
        CONVERTER_VERSION,
        metadata={"source": f"{SOURCE_PACKAGE} mtcnn/assets/weights/{network}.lz4", "license": LICENSE},
    )


def _card(network: str, source_sha: str, onnx_name: str, onnx_bytes: bytes) -> dict[str, Any]:
    size = _PLANS[network]["size"]
    return {
        "name": f"mtcnn_{network}.ipazc_1_0_0",
        "task": "detection",
        "arch": f"mtcnn_{network}",
        "files": [
            {"filename": onnx_name, "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "size_bytes": len(onnx_bytes)}
        ],
        "license": LICENSE,
        "input_size": None if size is None else [size, size],
        "color_order": "RGB",
        "mean": [127.5, 127.5, 127.5],
        "std": [128.0, 128.0, 128.0],
        "layout": "NCHW",
        "source_url": SOURCE_URL,
        "paper": "K. Zhang et al., Joint Face Detection and Alignment using Multi-task Cascaded CNNs, SPL 2016",
        "notes": (
            f"Converted by facelab.mtcnn.convert {CONVERTER_VERSION} from mtcnn/assets/weights/{network}.lz4 of the "
            f"PyPI package {SOURCE_PACKAGE} (ipazc/mtcnn, MIT licence, Copyright (c) 2019-2024 Ivan de Paz Centeno)."
        ),
        "extra": {
            "source_file": f"{network}.lz4",
            "source_sha256": source_sha,
            "source_package": SOURCE_PACKAGE,
            "converter_version": CONVERTER_VERSION,
        },
    }


def convert_cached(home: str | Path | None = None, sources: dict[str, str | Path] | None = None) -> MTCNNFiles:
    """Convert the three networks once and reuse the results.

    Files live in ``<home>/converted/``: ``mtcnn_<net>.onnx`` and ``mtcnn_<net>.json`` (the card).
    A cached pair is reused while its card records the SHA-256 of the source ``.lz4`` and
    :data:`CONVERTER_VERSION`.

    Args:
        home: the model home; default ``$FACELAB_HOME`` or ``~/.facelab``.
        sources: ``{"pnet": path, ...}`` to convert other files than the installed package's.

    Returns:
        :class:`MTCNNFiles`.

    Raises:
        ModelNotFoundError: the ``mtcnn`` package (or a given file) is missing.
        ModelError: a file is corrupt or not MTCNN weights.
    """
    from facelab.zoo._hub import facelab_home

    folder = facelab_home(home) / "converted"
    paths: dict[str, Path] = {}
    cards: dict[str, dict[str, Any]] = {}
    for network in NETWORKS:
        src = Path(sources[network]) if sources and network in sources else weights_path(network)
        data, _ = read_source(src, f"MTCNN {network} weights")
        sha = hashlib.sha256(data).hexdigest()

        def build(onnx_name: str, data: bytes = data, network: str = network, src: Path = src, sha: str = sha):
            onnx_bytes = network_to_onnx(read_weights(data, network, str(src)), network, str(src))
            return onnx_bytes, _card(network, sha, onnx_name, onnx_bytes)

        paths[network], cards[network] = cached_conversion(folder, f"mtcnn_{network}", sha, CONVERTER_VERSION, build)
    return MTCNNFiles(paths["pnet"], paths["rnet"], paths["onet"], cards)
