"""The local web app: click-to-segment and folder annotation in the browser (``litesam serve``).

``create_app(settings)`` builds the FastAPI app (page + HTTP API documented at ``/openapi.json``);
``serve(settings)`` runs it with uvicorn. Needs the ``server`` extra (fastapi, uvicorn, python-multipart),
imported only when these names are first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
