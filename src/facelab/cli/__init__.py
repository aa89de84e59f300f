"""facelab.cli."""
