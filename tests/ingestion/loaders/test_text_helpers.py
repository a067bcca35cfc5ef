"""Shared helpers in ingestion/loaders/_text.py."""

from __future__ import annotations

import datetime as dt

from ingestion.loaders._text import SectionBuilder, decode_bytes, format_cell, table_rows


def test_table_rows_keep_header_and_title() -> None:
    rows = [
        ("Stanley Cups", None, None),
        ("Team", "Location", "Cups"),
        ("Blues", "STL", 1.0),
        (None, None, None),
    ]
    assert list(table_rows(rows)) == [
        ("text", "Stanley Cups"),
        ("row", "Team: Blues; Location: STL; Cups: 1"),
    ]


def test_table_rows_single_column_has_no_header() -> None:
    assert list(table_rows([["a"], ["b"]])) == [("row", "a"), ("row", "b")]


def test_table_rows_never_drop_rows_equal_to_the_header() -> None:
    assert len(list(table_rows([["x", "x"]] * 3))) == 2


def test_format_cell() -> None:
    assert format_cell(13.0) == "13"
    assert format_cell(0.1 + 0.2) == "0.3"
    assert format_cell(dt.datetime(2023, 6, 30)) == "2023-06-30"
    assert format_cell("  a\n b ") == "a b"


def test_decode_bytes_bomless_utf16_be() -> None:
    assert decode_bytes("plain words here".encode("utf-16-be")) == "plain words here"


def test_section_builder_merges_only_same_location() -> None:
    out = SectionBuilder()
    out.add("a", heading_path=("H",))
    out.add("b", heading_path=("H",))
    out.add("t", kind="table", heading_path=("H",))
    out.add("c", heading_path=("H",))
    assert [(s.kind, s.text) for s in out.sections] == [("text", "a\nb"), ("table", "t"), ("text", "c")]
