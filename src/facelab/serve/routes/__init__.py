"""The service's routers, one module per resource; :data:`ROUTERS` lists them in mount order."""

from facelab.serve.routes import compute, system

ROUTERS = (system.router, compute.router)

__all__ = ["ROUTERS"]
