"""Alignment: five-point similarity crops, box crops, dense landmarks and head pose.

Importing this package registers :class:`~facelab.alignment.landmarks.LandmarkRunner` as the
``"landmark_2d_106"`` and ``"landmark_3d_68"`` runners in :data:`facelab.registry.RUNNERS`.
"""

from facelab.alignment.landmarks import LandmarkRunner as LandmarkRunner
from facelab.alignment.pose import estimate_pose as estimate_pose
from facelab.alignment.transform import estimate_norm as estimate_norm
from facelab.alignment.transform import estimate_similarity as estimate_similarity
from facelab.alignment.transform import norm_crop as norm_crop
from facelab.alignment.transform import norm_crop_batch as norm_crop_batch

__all__ = ["LandmarkRunner", "estimate_norm", "estimate_similarity", "estimate_pose", "norm_crop", "norm_crop_batch"]
