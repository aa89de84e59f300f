"""facelab.swap."""
