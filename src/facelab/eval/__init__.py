"""facelab.eval: framework-agnostic evaluation of recognition, detection and landmark models.

Submodules (imported on demand; none imports a model runtime):

* :mod:`facelab.eval.pairs` — ``.bin`` / LFW ``pairs.txt`` / CSV / identity-folder pair lists;
* :mod:`facelab.eval.verification` — InsightFace's 10-fold protocol with any ``embed(batch)``;
* :mod:`facelab.eval.metrics` — ROC, AUC, EER, TAR@FAR;
* :mod:`facelab.eval.calibration` — threshold for a target FAR, bootstrap CIs, JSON;
* :mod:`facelab.eval.ijb`, :mod:`facelab.eval.megaface` — template / million-distractor protocols;
* :mod:`facelab.eval.widerface`, :mod:`facelab.eval.detection_ap` — detection AP;
* :mod:`facelab.eval.landmarks` — NME, CED, ``.pts``;
* :mod:`facelab.eval.report` — JSON, tables, plots.
"""

__all__: list[str] = []
