"""The voxid web service (FastAPI) and its static page; see `voxid.server.app`."""

from voxid.server.app import create_app

__all__ = ["create_app"]
