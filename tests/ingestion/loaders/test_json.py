from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.loaders import LoaderError, load_file
from ingestion.loaders.json import flatten


def test_flatten_paths() -> None:
    assert flatten({"a": {"b": [1, {"c": None}], "d": "中文"}, "e": []}) == [
        "a.b[0]: 1",
        "a.b[1].c: null",
        "a.d: 中文",
        "e: []",
    ]


def test_array_of_records(load_example) -> None:
    doc = load_example("simple.json")
    assert all(s.kind == "row" for s in doc.sections)
    first = doc.sections[0].text.splitlines()
    assert "text: These are a few of my favorite things:" in first
    assert "metadata.languages[0]: eng" in first


def test_ndjson_matches_json(load_example) -> None:
    assert load_example("simple.ndjson").text == load_example("simple.json").text


def test_invalid_json_reports_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(LoaderError, match=r"invalid JSON at line 4, column 1"):
        load_file(path)


def test_invalid_ndjson_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(LoaderError, match=r"invalid JSON at line 3, column 9"):
        load_file(path)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LoaderError):
        load_file(path)
