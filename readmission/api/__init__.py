"""The inference API: FastAPI app factory (`create_app`), models, routes, metrics."""

from readmission.api.app import create_app

__all__ = ["create_app"]
