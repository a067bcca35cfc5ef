"""A scan longer than the loader's per-file time limit keeps the pages OCR read before the limit: OCR stops
just before it (a page being read is stopped), the file is ingested with what was read, and the pages left
are named per range of pages, instead of the whole file timing out. Real Tesseract, real scanned pages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfWriter
from sqlalchemy import select

from ingestion import ocr
from ingestion.isolation import LoaderPool
from ingestion.loaders import LoadedDocument, LoaderError, load_file
from retrieval.schema import Chunk, Document
from tests.ingestion.test_ocr import CHINESE, DPI, chinese_page, image_pdf, needs_tesseract, render, scanned

LIMIT_S = 10.0


def quick_and_long_pages(quick: int, long: int, seed: int) -> list[Image.Image]:
    """`quick` pages of two lines (about a second each), then `long` full pages (several seconds each): the
    limit falls after the first page, inside the long ones, however busy the machine is."""
    short = [scanned(chinese_page(), seed + i) for i in range(quick)]
    full = [scanned(chinese_page(lines=28), seed + quick + i) for i in range(long)]
    return short + full


def runs(numbers: list[int]) -> list[str]:
    """[2, 3, 5] -> ["pages 2-3", "page 5"]: how the warning of each range of pages starts."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return [f"page {a}" if a == b else f"pages {a}-{b}" for a, b in spans]


def expected_warnings(unread: list[int], limit_s: float) -> list[str]:
    return [f"{r} not OCR'd: time limit of {limit_s:g} s reached" for r in runs(unread)]


def ocr_pages_of(doc: LoadedDocument) -> list[int]:
    return [s.page for s in doc.sections if s.ocr_confidence is not None]


def test_the_time_limit_keeps_a_reserve_to_reply() -> None:
    limit = ocr.TimeLimit.for_file(120.0, started=1000.0)
    assert (limit.stop_at, limit.limit_s) == (1115.0, 120.0)  # 5 s at most to send what was read
    assert ocr.TimeLimit.for_file(3.0, started=0.0).stop_at == pytest.approx(2.7)  # a tenth of a short limit
    with pytest.raises(ValueError, match="time limit must be positive"):
        ocr.TimeLimit.for_file(0)


@needs_tesseract
def test_pages_after_the_limit_are_not_rendered_and_are_named_per_range() -> None:
    rendered: list[int] = []

    def pages():
        for number in (1, 2, 3, 5, 9, 10):
            rendered.append(number)
            yield number, scanned(chinese_page(), number), DPI

    passed = ocr.TimeLimit(stop_at=time.monotonic() - 1, limit_s=120.0)
    sections, problems = ocr.ocr_pages(
        pages(), ocr.TesseractEngine(), numbers=[1, 2, 3, 5, 9, 10], limit=passed
    )
    assert sections == [] and rendered == []
    assert problems == [
        "pages 1-3 not OCR'd: time limit of 120 s reached",
        "page 5 not OCR'd: time limit of 120 s reached",
        "pages 9-10 not OCR'd: time limit of 120 s reached",
    ]
    with pytest.raises(ValueError, match="the page numbers"):
        ocr.ocr_pages(pages(), ocr.TesseractEngine(), limit=passed)


@needs_tesseract
def test_a_long_scan_is_ingested_up_to_the_time_limit_with_the_rest_named(assistant, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    total = 8
    image_pdf(folder / "long-scan.pdf", quick_and_long_pages(2, total - 2, seed=50))
    assistant.settings.loader_timeout_s = LIMIT_S  # before the first ingest builds the loader pool
    started = time.monotonic()
    summary = assistant.ingest(folder, collection="scans")
    elapsed = time.monotonic() - started
    assert summary.files_failed == 0, summary.failures
    assert summary.files_new == 1
    with assistant.store.sessions() as session:
        (doc,) = session.scalars(select(Document))
        status, error = doc.status, doc.error
        chunks = session.execute(
            select(Chunk.page, Chunk.ocr_confidence).where(Chunk.document_id == doc.id)
        ).all()
    read = sorted({page for page, _ in chunks})
    assert status == "ready"
    assert read and read == list(range(1, len(read) + 1)), read  # the first pages, in order
    assert all(confidence is not None and confidence > 40 for _, confidence in chunks)
    hits = [h for h in assistant.search(CHINESE[0], k=10) if h.path.endswith("long-scan.pdf")]
    assert hits and hits[0].page in read and hits[0].ocr_confidence is not None  # found by search
    k = read[-1]
    assert k < total - 1, f"{k} of {total} pages read in {LIMIT_S} s: the pages are too quick for this test"
    assert error == ocr.describe(expected_warnings(list(range(k + 1, total + 1)), LIMIT_S))
    assert elapsed < 3 * LIMIT_S  # stopped at the limit, not after every page was read


@needs_tesseract
def test_text_pages_are_kept_and_each_unread_range_is_named(tmp_path: Path, example_docs_dir: Path) -> None:
    """Scans 1-3, a text-layer page 4, scans 5-6: the text page is read whatever the time; ranges stay apart."""
    scans = image_pdf(tmp_path / "scans.pdf", quick_and_long_pages(1, 4, seed=60))
    writer = PdfWriter()
    writer.append(str(scans), pages=[0, 1, 2])
    writer.append(str(example_docs_dir / "pdf" / "fake-memo.pdf"), pages=[0])
    writer.append(str(scans), pages=[3, 4])
    mixed = tmp_path / "mixed.pdf"
    with mixed.open("wb") as fh:
        writer.write(fh)
    with LoaderPool(1, timeout_s=120.0) as pool:
        limit_s = limit_inside_the_second_long_page(pool, tmp_path, seed=60)
        pool.timeout_s = limit_s  # the next file's limit, on the same warm worker that was timed
        doc = pool.load(mixed, max_bytes=1 << 30)
    read = ocr_pages_of(doc)
    assert read and read == list(range(1, len(read) + 1)) and len(read) < 3, (read, limit_s)
    assert any(s.page == 4 and s.ocr_confidence is None and "bottles" in s.text for s in doc.sections)
    unread = [n for n in (1, 2, 3, 5, 6) if n > read[-1]]
    assert doc.metadata["warnings"] == ocr.describe(expected_warnings(unread, limit_s))


def limit_inside_the_second_long_page(pool: LoaderPool, tmp_path: Path, seed: int) -> float:
    """A file time limit whose OCR stop falls after the quick first page and before the end of the second
    long one, timed on this machine through `pool` (a fixed limit read three pages on a fast machine).

    With o the per-file overhead, q a quick page and l a long one, the stop must fall in [o + q, o + q + 2l);
    the whole-file times are T_q = o + q and T_l = o + l, and T_l + T_q / 2 lies inside while o < q + 2l."""

    def seconds(pages: list[Image.Image], name: str) -> float:
        path = image_pdf(tmp_path / name, pages)
        started = time.monotonic()
        pool.load(path, max_bytes=1 << 30)
        return time.monotonic() - started

    quick, long = quick_and_long_pages(1, 1, seed=seed + 100)
    seconds([quick], "warm-up.pdf")  # the worker's start and first imports are no per-file overhead
    t_quick, t_long = seconds([quick], "quick.pdf"), seconds([long], "long.pdf")
    return round((t_long + t_quick / 2) / (1 - ocr.RESERVE_SHARE), 1)


@needs_tesseract
def test_a_multi_page_tiff_is_read_up_to_the_time_limit(tmp_path: Path) -> None:
    frames = quick_and_long_pages(1, 5, seed=70)
    tiff = tmp_path / "scan.tiff"
    frames[0].save(tiff, save_all=True, append_images=frames[1:], dpi=(DPI, DPI), compression="tiff_lzw")
    with LoaderPool(1, timeout_s=6.0) as pool:
        doc = pool.load(tiff, max_bytes=1 << 30)
    read = ocr_pages_of(doc)
    assert read and read == list(range(1, len(read) + 1)) and len(read) < 5, read
    assert doc.metadata["warnings"] == ocr.describe(expected_warnings(list(range(read[-1] + 1, 7)), 6.0))


@needs_tesseract
def test_a_scan_with_no_page_read_in_time_fails_with_the_pages_named(tmp_path: Path) -> None:
    pdf = image_pdf(tmp_path / "long.pdf", [scanned(chinese_page(lines=28), s) for s in (80, 81, 82)])
    with (
        LoaderPool(1, timeout_s=2.0) as pool,
        pytest.raises(
            LoaderError, match=r"PDF has no extractable text: pages 1-3 not OCR'd: time limit of 2 s reached"
        ),
    ):
        pool.load(pdf, max_bytes=1 << 30)


def test_without_a_time_limit_every_page_is_read(tmp_path: Path, example_docs_dir: Path) -> None:
    """In-process (no loader worker, no limit), OCR reads every page, as before."""
    if ocr.shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed")
    memo = example_docs_dir / "pdf" / "fake-memo.pdf"
    pdf = image_pdf(tmp_path / "memo.pdf", [scanned(render(memo, 0), 90), scanned(render(memo, 0), 91)])
    doc = load_file(pdf)
    assert ocr_pages_of(doc) == [1, 2] and "warnings" not in doc.metadata
