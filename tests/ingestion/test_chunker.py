from __future__ import annotations

import json

import pytest

from ingestion.chunker import Chunker
from ingestion.loaders.base import LoadedDocument, Section


@pytest.fixture(scope="module")
def chunker(embedder) -> Chunker:
    return Chunker(embedder.count_tokens, max_tokens=64, overlap_tokens=16)


def _words(text: str) -> set[str]:
    return set(text.split())


def test_chunks_respect_token_budget_and_never_cut_words(chunker, embedder, example_docs_dir):
    text = (example_docs_dir / "book-war-and-peace-1p.txt").read_text()
    chunks = chunker.chunk(LoadedDocument([Section(text)], mime="text/plain"))
    assert len(chunks) > 5
    source_words = _words(text)
    for chunk in chunks:
        assert embedder.count_tokens([chunk.text])[0] <= 64 + 4  # joins may merge a sub-word at most
        assert chunk.token_count <= 64
        for word in chunk.text.split():
            assert word in source_words, f"cut or invented word {word!r}"
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_overlap_repeats_trailing_sentences(embedder):
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(40)]
    doc = LoadedDocument([Section(" ".join(sentences))], mime="text/plain")
    chunks = Chunker(embedder.count_tokens, max_tokens=40, overlap_tokens=12).chunk(doc)
    assert len(chunks) > 3
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last_sentence = prev.text.split(". ")[-1].rstrip(".")
        assert last_sentence in nxt.text


def test_chunks_never_span_two_locations(chunker):
    doc = LoadedDocument(
        [
            Section("Intro text on page one.", page=1, heading_path=("Report",)),
            Section("More on page one.", page=1, heading_path=("Report",)),
            Section("Page two text.", page=2, heading_path=("Report", "Results")),
            Section("Slide text", slide=3),
        ],
        mime="application/pdf",
    )
    chunks = chunker.chunk(doc)
    assert [(c.page, c.slide, c.heading) for c in chunks] == [
        (1, None, "Report"),
        (2, None, "Report > Results"),
        (None, 3, None),
    ]
    assert chunks[0].text == "Intro text on page one.\n\nMore on page one."


def test_chinese_text_is_chunked_without_spaces(embedder, shared_data):
    data = json.loads((shared_data / "cmrc2018_dev" / "cmrc2018_dev.json").read_text())
    context = data["data"][0]["paragraphs"][0]["context"]
    chunks = Chunker(embedder.count_tokens, max_tokens=48, overlap_tokens=8).chunk(
        LoadedDocument([Section(context)], mime="text/plain")
    )
    assert len(chunks) >= 3
    for chunk in chunks:
        assert chunk.token_count <= 48
        # Chunks are verbatim runs of the source: no spaces invented between Chinese characters.
        assert chunk.text.replace("\n\n", "") in context.replace("\n", ""), chunk.text
    # Every sentence of the source survives somewhere.
    for sentence in context.split("。"):
        if sentence.strip():
            assert any(sentence.strip()[:10] in c.text for c in chunks)


def test_invalid_configuration_is_rejected(embedder):
    with pytest.raises(ValueError):
        Chunker(embedder.count_tokens, max_tokens=8)
    with pytest.raises(ValueError):
        Chunker(embedder.count_tokens, max_tokens=64, overlap_tokens=64)


def test_a_long_table_is_cut_between_rows_and_every_chunk_keeps_its_header(chunker, embedder):
    header = "Line item | 2021 | 2022"
    rows = [f"Segment {i} revenue | {40_000 + i:,} | {50_000 + 7 * i:,}" for i in range(60)]
    rows.append("Total revenue | 41,234 | 52,862")
    doc = LoadedDocument(
        [
            Section("The consolidated statement follows."),
            Section("\n".join([header, *rows]), kind="table"),
            Section("Figures are unaudited."),
        ],
        mime="text/html",
    )
    chunks = chunker.chunk(doc)
    table_chunks = [c for c in chunks if "revenue |" in c.text]
    assert len(table_chunks) > 3  # 61 rows do not fit one 64-token chunk
    for c in table_chunks:
        lines = c.text.splitlines()
        assert lines[0] == header, c.text
        assert all(line.count(" | ") == 2 for line in lines)  # whole rows, one per line
        assert c.token_count <= 64
    found = [line for c in table_chunks for line in c.text.splitlines()[1:]]
    assert found == rows  # each row once, in order
    # prose around the table stays prose, in chunks of its own
    assert chunks[0].text == "The consolidated statement follows."
    assert chunks[-1].text == "Figures are unaudited."


def test_real_docx_table_rows_stay_on_their_own_lines(chunker, example_docs_dir):
    from ingestion.loaders import load_file

    doc = load_file(example_docs_dir / "docx-tables.docx")
    chunks = chunker.chunk(doc)
    assert any(
        c.text.splitlines()[:2] == ["Header Col 1 | Header Col 2", "Lorem ipsum | A link example"]
        for c in chunks
    )
