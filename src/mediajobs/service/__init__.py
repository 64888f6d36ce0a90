"""The Starlette service: routes, auth, errors, OpenAPI, the web page."""

from __future__ import annotations

from mediajobs.service.app import create_app
from mediajobs.service.state import Services

__all__ = ["Services", "create_app"]
