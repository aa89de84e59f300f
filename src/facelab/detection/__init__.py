"""facelab.detection."""
