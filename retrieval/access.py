"""Who is searching: retrieval filters every result by the principal's groups before returning it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    name: str
    groups: frozenset[str] = frozenset()
    is_admin: bool = False

    @classmethod
    def system(cls) -> Principal:
        """The operator at the server's own console (CLI without --user, Python without user=)."""
        return cls("system", frozenset(), True)
