"""Video files and streams: read/write with audio kept, anonymise, analyse (extra ``video``: PyAV).

Importing this package does not import PyAV; the readers and writers import it when used.

* :func:`open_video`, :class:`VideoWriter`, :class:`LiveSource` — IO (:mod:`facelab.video.io`,
  :mod:`facelab.video.live`).
* :func:`anonymize_video`, :func:`render_video`, :func:`anonymize_image` — anonymisation
  (:mod:`facelab.video.anonymize`), with the editable boxes file of :mod:`facelab.video.boxes`.
* :func:`iter_video`, :class:`VideoAnalyzer` — analysis frame by frame (:mod:`facelab.video.analyze`,
  :mod:`facelab.track.stream`).
"""

from facelab.track.stream import VideoAnalyzer as VideoAnalyzer
from facelab.video.analyze import draw_tracks as draw_tracks
from facelab.video.analyze import iter_video as iter_video
from facelab.video.analyze import write_summary as write_summary
from facelab.video.anonymize import AnonymizeOptions as AnonymizeOptions
from facelab.video.anonymize import AnonymizeReport as AnonymizeReport
from facelab.video.anonymize import anonymize_image as anonymize_image
from facelab.video.anonymize import anonymize_video as anonymize_video
from facelab.video.anonymize import render_video as render_video
from facelab.video.boxes import read_boxes as read_boxes
from facelab.video.boxes import write_boxes as write_boxes
from facelab.video.io import Frame as Frame
from facelab.video.io import VideoInfo as VideoInfo
from facelab.video.io import VideoWriter as VideoWriter
from facelab.video.io import open_video as open_video
from facelab.video.live import LiveSource as LiveSource

__all__ = [
    "AnonymizeOptions",
    "AnonymizeReport",
    "Frame",
    "LiveSource",
    "VideoAnalyzer",
    "VideoInfo",
    "VideoWriter",
    "anonymize_image",
    "anonymize_video",
    "draw_tracks",
    "iter_video",
    "open_video",
    "read_boxes",
    "render_video",
    "write_boxes",
]
