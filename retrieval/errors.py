"""The store's one error type, in its own module so the store and the collaborators it composes (the vector
mirror) raise the same class without importing each other."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store operation refused: bad input, another embedding model's vectors, a missing collection."""
