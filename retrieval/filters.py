"""What a search may be narrowed to: collections, document types, a path prefix and a modification-date range.

Filters are applied to documents in SQL, in the same place as access control, so every search mode
(dense, keyword, hybrid) narrows identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SearchFilters:
    """Empty fields mean "no restriction". Dates compare with the source file's modification time."""

    collections: tuple[str, ...] = ()
    mimes: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    path_prefix: str | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None

    def __post_init__(self) -> None:
        # Accept lists and a bare string for convenience, store tuples so instances stay hashable.
        for name in ("collections", "mimes", "extensions"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(
            self,
            "extensions",
            tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions if e),
        )
        if self.modified_after and self.modified_before and self.modified_after > self.modified_before:
            raise ValueError("modified_after is later than modified_before")

    @property
    def empty(self) -> bool:
        """True when no filter is set: search then needs no filter condition at all."""
        return not (
            self.collections
            or self.mimes
            or self.extensions
            or self.path_prefix
            or self.modified_after
            or self.modified_before
        )

    @property
    def time_dependent(self) -> bool:
        """Date filters read mtime, which an unchanged re-ingest may touch without a new generation."""
        return self.modified_after is not None or self.modified_before is not None
