"""facelab.zoo."""
