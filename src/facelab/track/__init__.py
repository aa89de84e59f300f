"""Faces over time: a ByteTrack-style tracker, per-track identity, enter/exit events, mask planning.

numpy + SciPy only (no video decoding here; see :mod:`facelab.video`).

* :class:`FaceTracker` / :class:`TrackerConfig` — Kalman boxes, two-stage IoU association.
* :class:`TrackIdentity`, :class:`Matcher`, :class:`ReferenceMatcher` — pooled templates matched
  against known people with a margin and confirmation frames.
* :class:`PresenceMonitor` — ``person_enter``/``person_exit``/``unknown_enter``/``unknown_exit``.
* :class:`VideoAnalyzer` — all of it frame by frame on a :class:`~facelab.pipeline.FaceAnalyzer`.
* :func:`plan_masks` — which boxes to hide on every frame of a whole video.
"""

from facelab.track.bytetrack import FaceTracker as FaceTracker
from facelab.track.bytetrack import Track as Track
from facelab.track.bytetrack import TrackerConfig as TrackerConfig
from facelab.track.events import EventPolicy as EventPolicy
from facelab.track.events import PresenceEvent as PresenceEvent
from facelab.track.events import PresenceMonitor as PresenceMonitor
from facelab.track.events import Sighting as Sighting
from facelab.track.identity import Candidate as Candidate
from facelab.track.identity import Decision as Decision
from facelab.track.identity import GalleryMatcher as GalleryMatcher
from facelab.track.identity import IdentityConfig as IdentityConfig
from facelab.track.identity import Matcher as Matcher
from facelab.track.identity import ReferenceMatcher as ReferenceMatcher
from facelab.track.identity import TrackIdentity as TrackIdentity
from facelab.track.kalman import BoxKalman as BoxKalman
from facelab.track.plan import MaskBox as MaskBox
from facelab.track.plan import MaskPlanConfig as MaskPlanConfig
from facelab.track.plan import plan_masks as plan_masks
from facelab.track.plan import should_mask as should_mask
from facelab.track.stream import FrameResult as FrameResult
from facelab.track.stream import TrackedFace as TrackedFace
from facelab.track.stream import TrackSummary as TrackSummary
from facelab.track.stream import VideoAnalyzer as VideoAnalyzer

__all__ = [
    "BoxKalman",
    "Candidate",
    "Decision",
    "EventPolicy",
    "FaceTracker",
    "FrameResult",
    "GalleryMatcher",
    "IdentityConfig",
    "MaskBox",
    "MaskPlanConfig",
    "Matcher",
    "PresenceEvent",
    "PresenceMonitor",
    "ReferenceMatcher",
    "Sighting",
    "Track",
    "TrackIdentity",
    "TrackSummary",
    "TrackedFace",
    "TrackerConfig",
    "VideoAnalyzer",
    "plan_masks",
    "should_mask",
]
