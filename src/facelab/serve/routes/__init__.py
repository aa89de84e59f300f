"""The service's routers, one module per resource; :data:`ROUTERS` lists them in mount order."""

from facelab.serve.routes import compute, gallery, system

ROUTERS = (system.router, compute.router, gallery.router)

__all__ = ["ROUTERS"]
