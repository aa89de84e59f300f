"""facelab.attributes."""
