"""JSON and NDJSON: flattened to "key.path: value" lines, because embedding models
match "customer.address.city: Basel" far better than nested braces.

A top-level array (or each NDJSON line) is a list of records: each record becomes
its own "row" section with paths relative to the record.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._text import SectionBuilder, read_text
from .base import LoadedDocument, LoaderError


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # true/false/null/numbers as written in JSON


def flatten(value: object) -> list[str]:
    """'path: value' lines in document order; iterative, as hostile files nest deeply."""
    lines: list[str] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, dict) and node:
            items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
        elif isinstance(node, list) and node:
            items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
        else:
            text = _scalar(node)
            lines.append(f"{prefix}: {text}" if prefix else text)
            continue
        stack.extend(reversed(items))
    return lines


def _parse(text: str, line_offset: int = 0) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(
            f"invalid JSON at line {exc.lineno + line_offset}, column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise LoaderError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # e.g. integers beyond the conversion limit
        raise LoaderError(f"invalid JSON: {exc}") from exc


class JsonLoader:
    """One class for both formats: NDJSON is JSON per line."""

    def __init__(
        self, mime: str = "application/json", extensions: tuple[str, ...] = (".json",), lines: bool = False
    ):
        self.mime = mime
        self.extensions = extensions
        self._lines = lines

    def load(self, path: Path) -> LoadedDocument:
        """A top-level list (or NDJSON) as one section per record, anything else as one section of flattened fields."""
        text = read_text(path.read_bytes())
        records: list[object]
        if self._lines:
            records = [
                _parse(line, n - 1) for n, line in enumerate(text.split("\n"), start=1) if line.strip()
            ]
        else:
            value = _parse(text)
            if not isinstance(value, list):
                out = SectionBuilder()
                out.add("\n".join(flatten(value)))
                return LoadedDocument(sections=out.sections, mime=self.mime)
            records = value
        out = SectionBuilder()
        for record in records:
            out.add("\n".join(flatten(record)), kind="row")
        return LoadedDocument(sections=out.sections, mime=self.mime)
