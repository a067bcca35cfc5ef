"""sparq's application layer: `from app import Assistant`."""

from app.assistant import Assistant, SparqError
from app.config import Settings

__all__ = ["Assistant", "Settings", "SparqError"]
