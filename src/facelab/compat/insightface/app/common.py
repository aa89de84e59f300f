"""InsightFace's ``Face``: a dict whose keys are also attributes, ``None`` for anything unset.

Behaviour (that of ``insightface.app.common.Face``, which programs rely on):

* ``Face(d=None, **kwargs)`` stores every entry of ``d`` and ``kwargs``;
* ``face.x = v``, ``face["x"] = v`` and ``setattr(face, "x", v)`` are the same: the value is both
  an item and an attribute; a plain ``dict`` value becomes a ``Face``, and so does every ``dict``
  inside a ``list`` or ``tuple`` value (which is stored as a ``list``);
* reading an attribute that was never set gives ``None`` (``face.gender is None`` before the
  gender model ran); items keep dict semantics (``face["gender"]`` raises ``KeyError``,
  ``face.get("gender")`` is ``None``);
* ``embedding_norm`` (L2 norm of ``embedding``), ``normed_embedding`` (``embedding`` divided by
  it) and ``sex`` (``"M"`` when ``gender == 1``, else ``"F"``) are derived properties, not keys.

One deliberate difference: special (``__dunder__``) names are not answered with ``None``, so a
face can be pickled (to send it to another process) and deep-copied.

Fields :class:`~facelab.compat.insightface.app.FaceAnalysis` fills, with InsightFace's types:
``bbox`` ``(4,)`` ``float32`` ``[x1, y1, x2, y2]``, ``kps`` ``(5, 2)`` ``float32``, ``det_score``
``numpy.float32``, ``landmark_3d_68`` ``(68, 3)`` ``float32``, ``pose`` ``(3,)`` ``float32``
``[pitch, yaw, roll]`` degrees, ``landmark_2d_106`` ``(106, 2)`` ``float32``, ``gender``
``numpy.int64`` (1 = male), ``age`` ``int`` and ``embedding`` ``(D,)`` ``float32`` (raw, not
normalised), in the order of the pack's model files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Face"]


class Face(dict):
    """One face as InsightFace returns it: a ``dict`` with attribute access (see the module docstring).

    Example:
        >>> face = Face(bbox=[0, 0, 10, 10], gender=1)
        >>> face.gender == face["gender"] == 1, face.sex, face.age is None
        (True, 'M', True)
    """

    def __init__(self, d: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        entries = dict(d or {})
        entries.update(kwargs)
        for key, value in entries.items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            value = [type(self)(v) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict) and not isinstance(value, type(self)):
            value = type(self)(value)
        object.__setattr__(self, name, value)
        dict.__setitem__(self, name, value)

    __setitem__ = __setattr__  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are neither instance attributes nor class members. Special
        # names stay unknown, so pickle and copy find no bogus hooks (InsightFace's Face cannot be
        # pickled because they come back as None).
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return None

    @property
    def embedding_norm(self) -> Any:
        """L2 norm of ``embedding`` (``numpy.float32``), or ``None`` without an embedding."""
        if self.embedding is None:
            return None
        return np.linalg.norm(self.embedding)

    @property
    def normed_embedding(self) -> Any:
        """``(D,)`` ``float32`` unit-length ``embedding``, or ``None``; the dot product of two is their cosine."""
        if self.embedding is None:
            return None
        return self.embedding / self.embedding_norm

    @property
    def sex(self) -> str | None:
        """``"M"`` for ``gender == 1``, ``"F"`` otherwise, ``None`` without ``gender``."""
        if self.gender is None:
            return None
        return "M" if self.gender == 1 else "F"
