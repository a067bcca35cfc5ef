"""Kind name -> connector class, imported only when used (an IMAP or web dependency never loads for a
folder). A new kind of source is one module plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from ingestion.connectors.base import Connector, SourceConfigError

CONNECTORS: dict[str, str] = {
    "folder": "ingestion.connectors.folder:FolderConnector",
    "imap": "ingestion.connectors.imap:ImapConnector",
    "web": "ingestion.connectors.web:WebConnector",
}


def connector_class(kind: str) -> type[Connector]:
    """The class registered for `kind`; a clear error naming the kinds there are."""
    try:
        module_name, _, name = CONNECTORS[kind].partition(":")
    except KeyError:
        raise SourceConfigError(
            f"unknown source kind {kind!r}; one of: {', '.join(sorted(CONNECTORS))}"
        ) from None
    cls: type[Connector] = getattr(importlib.import_module(module_name), name)
    return cls


def make_connector(kind: str, options: dict[str, Any]) -> Connector:
    """A connector of `kind` built from its stored options (validated by the connector's __init__)."""
    cls = connector_class(kind)
    try:
        return cls(**options)
    except TypeError as exc:  # an option the connector does not take
        raise SourceConfigError(f"{kind} source: {exc}") from exc
