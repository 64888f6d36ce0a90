"""The Starlette service: routes, auth, errors, OpenAPI, the web page."""

from __future__ import annotations

from mediajobs.service.app import Services, create_app

__all__ = ["Services", "create_app"]
