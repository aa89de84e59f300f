"""facelab.recognition."""
