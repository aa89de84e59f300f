"""facelab.train: recognition, detector and landmark training (the only facelab package that imports torch).

Sub-modules: :mod:`~facelab.train.margins` (combined / sub-centre margin losses),
:mod:`~facelab.train.partial_fc` (model-parallel Partial FC with a distributed softmax),
:mod:`~facelab.train.recordio` (MXNet RecordIO without mxnet; numpy only),
:mod:`~facelab.train.data` (datasets, sampler, torch-side normalisation),
:mod:`~facelab.train.backbones` (backbone registry), :mod:`~facelab.train.config`,
:mod:`~facelab.train.engine` (training loop, checkpoints) and :mod:`~facelab.train.export`.

Detector training is :mod:`facelab.train.detection` (SCRFD, RetinaFace), landmark training
:mod:`facelab.train.landmarks`; both run on :mod:`~facelab.train.loop` (distributed setup,
schedule, AMP, checkpoints, progress) and evaluate through facelab's own runners via
:mod:`~facelab.train.torch_session`.

This ``__init__`` imports nothing heavy itself; the sub-modules that need torch import it.
Install the extra with ``pip install 'facelab[train]'`` (torch, pyyaml, onnx).
"""

from __future__ import annotations

__all__: list[str] = []
