"""A torch module behind the ONNX Runtime session interface, so facelab's runners evaluate models during training.

:class:`TorchSession` has what the runners read from an
:class:`~facelab.runtime.session.OrtSession` — ``inputs``, ``outputs`` (:class:`TensorInfo`
lists, the exported file's signature), ``path``, ``providers`` and ``run(feeds, names)`` — and
runs an *export-form* module (the very module the exporter writes to ONNX) in eval mode under
``torch.no_grad``. The detection and landmark runners (their letterbox / crop, normalisation,
decoding and NMS) are therefore the one implementation used both during training and after export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from facelab.runtime.session import OrtSession, TensorInfo

__all__ = ["TorchSession"]


class TorchSession(OrtSession):
    """An :class:`~facelab.runtime.session.OrtSession` whose graph is a torch module.

    It keeps the session's ``input_names`` / ``output_names`` and replaces the ONNX Runtime
    session by the module (``session`` is the object itself, without model metadata).

    Args:
        module: maps the input tensor to a tuple/list of output tensors (or one tensor).
        inputs: the signature's input (one :class:`TensorInfo`).
        outputs: the signature's outputs, in the module's output order.
        device: where the module runs.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        device: torch.device | str = "cpu",
    ) -> None:  # OrtSession.__init__ reads an ONNX Runtime session; nothing of it applies here
        self.module = module
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.path = None
        self.device = torch.device(device)
        self.providers = [f"torch:{self.device}"]
        self.session = self

    def run(
        self, feeds: Mapping[str, np.ndarray] | np.ndarray, output_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Run the module on the first input; outputs as ``float32`` numpy arrays, in ``output_names`` order."""
        x = feeds if isinstance(feeds, np.ndarray) else feeds[self.inputs[0].name]
        was = self.module.training
        self.module.eval()
        with torch.no_grad():
            outs = self.module(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device))
        self.module.train(was)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        arrays = {o.name: t.detach().float().cpu().numpy() for o, t in zip(self.outputs, outs)}
        return [arrays[n] for n in (output_names or self.output_names)]

    def get_modelmeta(self) -> None:
        """No ONNX metadata (the runners then use their arguments)."""
        raise AttributeError("a TorchSession has no ONNX model metadata")

    def __repr__(self) -> str:
        return f"TorchSession({type(self.module).__name__}, {self.device})"
