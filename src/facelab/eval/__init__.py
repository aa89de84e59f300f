"""facelab.eval."""
