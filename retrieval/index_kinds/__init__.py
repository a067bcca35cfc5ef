"""The FAISS index kinds: name -> the module that makes, recognises and tunes that index type.

Each module holds `KIND`, an `IndexKindSpec`, and is imported on first use: reading the names (the settings
check SPARQ_INDEX_TYPE against them) never loads FAISS. A new kind is one module plus one line here;
`retrieval.ann` builds, recognises and searches every kind through this registry alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval.index_kinds.base import IndexKindSpec

KINDS: dict[str, str] = {
    "flat": "retrieval.index_kinds.flat",
    "hnsw": "retrieval.index_kinds.hnsw",
    "ivfpq": "retrieval.index_kinds.ivfpq",
}

_loaded: dict[str, IndexKindSpec] = {}


def unknown_kind(name: object) -> str:
    """The one message for a name that is not registered, naming those that are."""
    return f"unknown index kind {name!r}; one of: {', '.join(KINDS)}"


def index_kind(name: str) -> IndexKindSpec:
    """The spec registered as `name`, its module imported once (a search asks for it on every call)."""
    spec = _loaded.get(name)
    if spec is None:
        try:
            module_name = KINDS[name]
        except KeyError:
            raise ValueError(unknown_kind(name)) from None
        spec = _loaded[name] = importlib.import_module(module_name).KIND
    return spec
