"""Run InsightFace programs on facelab: change one import, keep the rest.

.. code-block:: python

    import facelab.compat.insightface as insightface          # was: import insightface
    from facelab.compat.insightface.app import FaceAnalysis   # was: from insightface.app import FaceAnalysis

    app = FaceAnalysis(name="buffalo_l", providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=0, det_size=(640, 640))
    faces = app.get(img)                       # img: (H, W, 3) uint8 BGR
    faces[0].normed_embedding, faces[0].sex, faces[0].landmark_2d_106

The surface is InsightFace 2.1's (``app.FaceAnalysis``, ``app.common.Face``,
``model_zoo.get_model`` and its model classes, ``utils.face_align``, ``data.get_image``); results
equal InsightFace's on the same model files. What differs: every model runs once per chunk of
faces rather than once per face, errors are facelab's (:mod:`facelab.errors`) instead of
``assert`` failures and prints, a requested accelerator that is not granted logs a warning,
zoo packs download into ``$FACELAB_HOME`` (checksummed), ``FaceAnalysis(name="open")`` gives
facelab's open pack, and no sample photos are bundled (see :mod:`.data`).

Importing this module is cheap (ONNX Runtime loads with the first model); ``import facelab``
does not import it.
"""

from facelab.compat.insightface import app as app
from facelab.compat.insightface import data as data
from facelab.compat.insightface import model_zoo as model_zoo
from facelab.compat.insightface import utils as utils
from facelab.compat.insightface.app import FaceAnalysis as FaceAnalysis

#: The InsightFace API version this layer follows (programs test ``insightface.__version__``).
__version__ = "2.1"

__all__ = ["FaceAnalysis", "__version__", "app", "data", "model_zoo", "utils"]
