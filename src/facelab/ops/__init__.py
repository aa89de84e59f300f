"""Pure numpy/OpenCV operations shared by every model: normalisation, boxes, NMS."""

__all__: list[str] = []
