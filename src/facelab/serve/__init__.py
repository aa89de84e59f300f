"""``facelab serve``: a self-hosted face service and web app over a gallery (extra ``serve``).

Thin by design: routes parse requests, call :class:`facelab.FaceAnalyzer` and
:mod:`facelab.gallery`, and format answers; no face logic lives here. Only this package imports
the web framework; ``import facelab`` does not import it.

Example:
    >>> from facelab.serve import ServeSettings, create_app     # doctest: +SKIP
    >>> app = create_app(ServeSettings(auth=False))              # doctest: +SKIP
"""

from facelab.serve.app import create_app as create_app
from facelab.serve.settings import ServeSettings as ServeSettings

__all__ = ["create_app", "ServeSettings"]
