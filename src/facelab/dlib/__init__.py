"""facelab.dlib."""
