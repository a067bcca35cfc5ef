"""The HTTP API: `create_app(assistant)` builds it; `sparq serve` runs it under uvicorn."""

from app.api.server import create_app

__all__ = ["create_app"]
