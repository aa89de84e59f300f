"""The service's routers, one module per resource; :data:`ROUTERS` lists them in mount order."""

from facelab.serve.routes import clusters, compute, gallery, jobs, system

ROUTERS = (system.router, compute.router, gallery.router, clusters.router, jobs.router)

__all__ = ["ROUTERS"]
