"""Weight converters' shared toolkit: readers for foreign weight files and one ONNX graph builder.

* :mod:`facelab.convert.dlib_reader` — dlib's binary serialisation (``.dat`` models);
* :mod:`facelab.convert.safe_pickle` — the restricted unpickler every pickle reader uses;
* :mod:`facelab.convert.torch_reader` — PyTorch checkpoints (zip and legacy ``torch.save``
  files) read into numpy arrays without torch;
* :mod:`facelab.convert.joblib_reader` — joblib numpy pickles (plain or lz4), without joblib;
* :mod:`facelab.convert.graph` — :class:`GraphBuilder`, the one ONNX graph builder;
* :mod:`facelab.convert.cache` — converted models cached under ``$FACELAB_HOME/converted/`` with
  their cards.

Layering: this package sits below the zoo and the model families and imports neither.

Model families describe their networks with these (``facelab.dlib.convert``, ...). Nothing here
imports torch; ``onnx`` is imported lazily (the ``convert`` extra).
"""

from facelab.convert.cache import atomic_write as atomic_write
from facelab.convert.cache import cached_conversion as cached_conversion
from facelab.convert.graph import GraphBuilder as GraphBuilder
from facelab.convert.safe_pickle import RestrictedUnpickler as RestrictedUnpickler
from facelab.convert.safe_pickle import UnsafePickleError as UnsafePickleError
from facelab.convert.safe_pickle import restricted_loads as restricted_loads
from facelab.convert.torch_reader import StateDict as StateDict
from facelab.convert.torch_reader import load_state_dict as load_state_dict
from facelab.convert.torch_reader import load_torch_checkpoint as load_torch_checkpoint

__all__ = [
    "GraphBuilder",
    "RestrictedUnpickler",
    "StateDict",
    "UnsafePickleError",
    "atomic_write",
    "cached_conversion",
    "load_state_dict",
    "load_torch_checkpoint",
    "restricted_loads",
]
