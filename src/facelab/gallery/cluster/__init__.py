"""facelab.gallery.cluster: people from a photo library, incremental and constraint-aware.

Faces become people in three layers, each usable on its own (NumPy only; faiss, usearch,
hdbscan / scikit-learn are optional and imported lazily):

* :mod:`~facelab.gallery.cluster.knn` — one k-nearest-neighbour graph (exact chunked matrix
  products, or faiss / usearch with a recall report);
* :mod:`~facelab.gallery.cluster.algorithms` — immich's incremental rule, DBSCAN, HDBSCAN,
  average-linkage agglomerative and Chinese Whispers (the measured default) over that graph,
  registered in :data:`CLUSTERERS`, with parameters derived from the pack's same-person threshold;
* :mod:`~facelab.gallery.cluster.engine` with :mod:`~facelab.gallery.cluster.constraints` — runs
  over plain arrays (:class:`FaceSet`) that keep the user's corrections (:class:`Correction`,
  stored as :class:`Constraint` rows), never put two faces of one photo into one person, never
  dissolve named people, keep person keys stable, and add new faces incrementally.

:mod:`~facelab.gallery.cluster.synthetic` draws libraries whose similarity statistics match a
real set (benchmarks and tests); :mod:`facelab.eval.cluster` scores a clustering.

Example:
    >>> import numpy as np
    >>> from facelab.gallery.cluster import FaceSet, recluster
    >>> x = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], np.float32)
    >>> faces = FaceSet(face_ids=[1, 2, 3, 4], embeddings=x, image_ids=["a", "b", "c", "a"])
    >>> recluster(faces, threshold=0.9).labels().tolist()
    [0, 0, 1, 1]
"""

from facelab.gallery.cluster.algorithms import (
    CLUSTERERS,
    DEFAULT_ALGORITHM,
    AverageLinkage,
    ChineseWhispers,
    Clusterer,
    HDBSCANClusterer,
    ImmichRule,
    KnnDBSCAN,
    make_clusterer,
    merge_cosine,
)
from facelab.gallery.cluster.constraints import (
    Constraint,
    ConstraintSet,
    Correction,
    FaceSet,
    apply_corrections,
)
from facelab.gallery.cluster.engine import Assignment, ClusterResult, add_faces, recluster
from facelab.gallery.cluster.knn import KnnGraph, build_knn, graph_recall, make_neighbor_index

__all__ = [
    "CLUSTERERS",
    "DEFAULT_ALGORITHM",
    "Assignment",
    "AverageLinkage",
    "ChineseWhispers",
    "ClusterResult",
    "Clusterer",
    "Constraint",
    "ConstraintSet",
    "Correction",
    "FaceSet",
    "HDBSCANClusterer",
    "ImmichRule",
    "KnnDBSCAN",
    "KnnGraph",
    "add_faces",
    "apply_corrections",
    "build_knn",
    "graph_recall",
    "make_clusterer",
    "make_neighbor_index",
    "merge_cosine",
    "recluster",
]
