"""The ``liveness`` pack installed offline into a test home from ``../shared`` (no download).

The two Silent-Face-Anti-Spoofing checkpoints are linked into ``<home>/models/liveness/``, where the
zoo finds and verifies them by their pinned SHA-256 exactly as after a download.
"""

from __future__ import annotations

from pathlib import Path

from cli_helpers import link_or_copy
from shared_data import shared_file

__all__ = ["install_liveness_pack", "SPOOFS", "LIVE"]

#: The repository's sample photos: two spoofs (a printed photo, a tablet) and one live face.
SPOOFS = ("models/silentface/samples/image_F1.jpg", "models/silentface/samples/image_F2.jpg")
LIVE = "models/silentface/samples/image_T1.jpg"

_FILES = ("2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth")


def install_liveness_pack(home: Path) -> Path:
    """Link the liveness checkpoints into ``home``; returns the pack folder."""
    folder = Path(home) / "models" / "liveness"
    for name in _FILES:
        target = folder / name
        if not target.exists():
            link_or_copy(shared_file(f"models/silentface/{name}"), target)
    return folder
