"""RGB liveness (face anti-spoofing): Silent-Face-Anti-Spoofing's MiniFASNets on ONNX Runtime.

* :mod:`facelab.liveness.minifasnet` — the networks as our own ONNX graphs, converted from the
  published PyTorch checkpoints without torch;
* :mod:`facelab.liveness.crop` — the original's face crops (box scaled around its centre, kept
  inside the image);
* :mod:`facelab.liveness.runner` — :class:`LivenessRunner` (registered as the ``"liveness"``
  runner), :class:`LivenessResult`, :func:`load_liveness` and the default threshold.

Importing this package registers the runner in :data:`facelab.registry.RUNNERS`.
"""

from facelab.liveness.runner import LIVENESS_PACK as LIVENESS_PACK
from facelab.liveness.runner import LIVENESS_THRESHOLD as LIVENESS_THRESHOLD
from facelab.liveness.runner import LivenessResult as LivenessResult
from facelab.liveness.runner import LivenessRunner as LivenessRunner
from facelab.liveness.runner import load_liveness as load_liveness

__all__ = ["LIVENESS_PACK", "LIVENESS_THRESHOLD", "LivenessResult", "LivenessRunner", "load_liveness"]
