from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.loaders import LoaderError, load_file

STANLEY = [
    "Team: Blues; Location: STL; Stanley Cups: 1",
    "Team: Flyers; Location: PHI; Stanley Cups: 2",
    "Team: Maple Leafs; Location: TOR; Stanley Cups: 13",
]


@pytest.mark.parametrize("name", ["stanley-cups.csv", "stanley-cups.tsv", "stanley-cups-utf-16.csv"])
def test_header_kept_in_every_row(load_example, name: str) -> None:
    doc = load_example(name)
    assert doc.sections[0].text == "Stanley Cups"  # title line above the header
    assert [s.text for s in doc.sections if s.kind == "row"] == STANLEY


def test_mime_per_extension(load_example) -> None:
    assert load_example("stanley-cups.csv").mime == "text/csv"
    assert load_example("stanley-cups.tsv").mime == "text/tab-separated-values"


def test_semicolon_delimiter(load_example) -> None:
    rows = [s.text for s in load_example("table-semicolon-delimiter.csv").sections]
    assert rows[1] == "Year: 2023; Month: 2; Revenue: 143,1; Costs: -814,38"


def test_quoted_commas(load_example) -> None:
    assert load_example("csv-with-escaped-commas.csv").sections[0].text == "A: A; A: A; A: A; A: A,A; A: A"


def test_single_column_keeps_every_line(load_example) -> None:
    lines = [s.text for s in load_example("single-column.csv").sections]
    assert lines[0] == "Lorem, ipsum" and lines[-1] == "Ut enim, ad minim, veniam"


def test_emoji_and_chinese(tmp_path: Path) -> None:
    path = tmp_path / "zh.csv"
    path.write_bytes("名字;城市\n张伟 👍;上海\n".encode("gb18030"))
    assert [s.text for s in load_file(path).sections] == ["名字: 张伟 👍; 城市: 上海"]


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("\n\n  \n")
    with pytest.raises(LoaderError, match="empty file"):
        load_file(path)
