"""facelab.alignment."""
