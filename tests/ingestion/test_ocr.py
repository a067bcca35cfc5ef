"""Scans are read by OCR: real pages of the shared example PDFs rendered to images with noise and a slight
rotation, saved as image-only PDFs, PNG and multi-page TIFF, plus a Chinese page; their sentences are found
by search and cited with their page and the OCR confidence, and a page OCR cannot read is reported."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter
from sqlalchemy import select

from app.ask import location_of, source_label
from ingestion import ocr
from ingestion.isolation import LoaderPool
from ingestion.loaders import LoaderError, load_file
from model.base import Generation, LLMEngine
from retrieval.schema import Document

pdfium = pytest.importorskip("pypdfium2")

DPI = 200
CHINESE = [
    "本季度公司在杭州新建了三座仓库，用于存放冷链药品。",
    "员工报销差旅费用须在出差结束后十五日内提交财务部。",
]


def _tesseract_ready() -> str | None:
    try:
        ocr.TesseractEngine("eng+chi_sim").check()
    except ocr.OcrUnavailable as exc:
        return str(exc)
    return None


needs_tesseract = pytest.mark.skipif(_tesseract_ready() is not None, reason=f"{_tesseract_ready()}")


def scanned(image: Image.Image, seed: int, angle: float = 1.2) -> Image.Image:
    """What a scanner makes of a page: slightly rotated, grey noise and specks of dust."""
    rng = np.random.default_rng(seed)
    page = image.convert("L").rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255)
    pixels = np.asarray(page, dtype=np.float32)
    pixels += rng.normal(0, 12, pixels.shape)
    specks = rng.random(pixels.shape)
    pixels[specks < 0.0008] = 0
    pixels[specks > 0.9992] = 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def render(pdf: Path, index: int, dpi: int = DPI) -> Image.Image:
    document = pdfium.PdfDocument(str(pdf))
    try:
        return document[index].render(scale=dpi / 72, grayscale=True).to_pil()
    finally:
        document.close()


def text_layer(pdf: Path, index: int) -> str:
    return PdfReader(pdf).pages[index].extract_text()


def sentences_of(text: str, n: int = 2) -> list[str]:
    """Two consecutive lines of running prose (eight words or more each, mostly letters and digits): what
    a user would search for, long enough to be unique to its page."""
    prose = []
    for line in text.splitlines():
        line = " ".join(line.split())
        letters = sum(c.isalnum() or c == " " for c in line)
        prose.append(len(line.split()) >= 8 and letters / max(1, len(line)) > 0.9)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    picked = [f"{lines[i]} {lines[i + 1]}" for i in range(len(lines) - 1) if prose[i] and prose[i + 1]]
    if not picked:  # a short page (a memo): its one line of prose
        picked = [line for line, ok in zip(lines, prose, strict=True) if ok]
    assert picked, "the example page has no line of prose"
    step = max(1, len(picked) // n)
    return picked[::step][:n]


def blank_scan(seed: int) -> Image.Image:
    return scanned(Image.new("L", (int(8.5 * DPI), 11 * DPI), 255), seed)


def chinese_page(lines: int = 2) -> Image.Image:
    fonts = [
        f
        for f in (
            "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
            "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        )
        if Path(f).is_file()
    ]
    if not fonts:
        pytest.skip("no CJK font installed (apt-get install -y fonts-wqy-zenhei)")
    font = ImageFont.truetype(fonts[0], size=int(DPI * 12 / 72))  # 12 pt at the scan's resolution
    page = Image.new("L", (int(8.5 * DPI), 11 * DPI), 255)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(CHINESE * (lines // 2) + CHINESE[: lines % 2]):
        draw.text((DPI, DPI + i * int(DPI * 0.3)), line, font=font, fill=0)
    return page


def image_pdf(path: Path, pages: list[Image.Image]) -> Path:
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:], resolution=DPI)
    return path


def hits_for(assistant, query: str, name: str) -> list:
    return [h for h in assistant.search(query, k=5) if h.path.endswith(name)]


@pytest.fixture
def pdf_dir(example_docs_dir: Path) -> Path:
    return example_docs_dir / "pdf"


@needs_tesseract
def test_scanned_pages_are_found_by_search_and_cited_with_page_and_ocr(
    assistant, pdf_dir: Path, tmp_path: Path
):
    memo, paper = pdf_dir / "fake-memo.pdf", pdf_dir / "multi-column-2p.pdf"
    layout = pdf_dir / "layout-parser-paper-fast.pdf"
    folder = tmp_path / "scans"
    folder.mkdir()
    # One PDF: page 1 a real text layer, 2 a scan of the memo, 3 a blank scan, 4 a scan of the paper's page 2.
    scans = image_pdf(
        tmp_path / "scans-only.pdf",
        [scanned(render(memo, 0), 1), blank_scan(2), scanned(render(paper, 1), 3, angle=-0.8)],
    )
    writer = PdfWriter()
    writer.append(str(paper), pages=[0])
    writer.append(str(scans))
    mixed = folder / "mixed.pdf"
    with mixed.open("wb") as fh:
        writer.write(fh)
    # Other pages as images (other text: near-duplicate passages are shown once): a PNG of a paper's first
    # page, a two-page TIFF (a blank page, then that paper's page 2).
    scanned(render(layout, 0), 4).save(folder / "layout.png", dpi=(DPI, DPI))
    tiff = [blank_scan(5), scanned(render(layout, 1), 6, angle=1.5)]
    tiff[0].save(
        folder / "layout.tiff", save_all=True, append_images=tiff[1:], dpi=(DPI, DPI), compression="tiff_lzw"
    )
    chinese = image_pdf(folder / "chinese.pdf", [scanned(chinese_page(), 7, angle=0.7)])

    summary = assistant.ingest(folder, collection="scans")
    assert summary.files_failed == 0, summary.failures
    assert summary.files_new == 4

    expected = [  # (sentence, file, page, read by OCR)
        *[(s, "mixed.pdf", 1, False) for s in sentences_of(text_layer(paper, 0))],
        *[(s, "mixed.pdf", 2, True) for s in sentences_of(text_layer(memo, 0))],
        *[(s, "mixed.pdf", 4, True) for s in sentences_of(text_layer(paper, 1))],
        *[(s, "layout.png", 1, True) for s in sentences_of(text_layer(layout, 0))],
        *[(s, "layout.tiff", 2, True) for s in sentences_of(text_layer(layout, 1))],
        *[(s, chinese.name, 1, True) for s in CHINESE],
    ]
    for sentence, name, page, by_ocr in expected:
        hits = hits_for(assistant, sentence, name)
        assert hits, f"{sentence!r} not found in {name}"
        best = hits[0]
        assert best.page == page, (sentence, name, best.page)
        where = location_of(best)
        assert where.startswith(f"page {page}")
        if by_ocr:
            assert best.ocr_confidence is not None and 40 <= best.ocr_confidence <= 100, best.ocr_confidence
            assert f"OCR, confidence {best.ocr_confidence:.0f}%" in where
            assert f"page {page}, OCR, confidence" in source_label(best)
        else:
            assert best.ocr_confidence is None and "OCR" not in where

    with assistant.store.sessions() as session:
        docs = {d.path.rsplit("/", 1)[-1]: d for d in session.scalars(select(Document))}
        assert all(d.status == "ready" for d in docs.values())
        # The blank pages are named, each in its own document; the readable ones are not.
        assert "page 3: OCR found no text" in (docs["mixed.pdf"].error or "")
        assert "page 2" not in (docs["mixed.pdf"].error or "") and "page 4" not in (
            docs["mixed.pdf"].error or ""
        )
        assert "page 1: OCR found no text" in (docs["layout.tiff"].error or "")
        assert docs["layout.png"].error is None and docs[chinese.name].error is None


@needs_tesseract
@pytest.mark.parametrize("seed", [30, 31])
def test_a_200_dpi_scan_in_a_pdf_is_read_at_its_own_resolution(tmp_path: Path, seed: int) -> None:
    """Rendering a noisy 200-dpi scan at 300 dpi enlarged its specks into strokes: whole lines were lost."""
    pdf = image_pdf(tmp_path / "scan.pdf", [scanned(chinese_page(), seed)])
    doc = load_file(pdf)
    assert doc.sections[0].ocr_confidence is not None and doc.sections[0].ocr_confidence > 80
    for sentence in CHINESE:
        assert sentence[:12] in doc.text.replace("\n", "")


@needs_tesseract
def test_a_scan_with_nothing_legible_fails_with_the_pages_named(tmp_path: Path) -> None:
    blank = image_pdf(tmp_path / "blank.pdf", [blank_scan(8), blank_scan(9)])
    with pytest.raises(LoaderError, match=r"page 1: OCR found no text.*page 2: OCR found no text"):
        load_file(blank)
    blank_scan(10).save(tmp_path / "blank.png")
    with pytest.raises(LoaderError, match=r"no text found by OCR in this image: page 1"):
        load_file(tmp_path / "blank.png")


@needs_tesseract
def test_a_tesseract_failure_is_reported_for_its_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Tesseract that cannot start or dies on a page costs that page, named, not the others silently."""
    page = chinese_page()
    engine = ocr.TesseractEngine("eng+chi_sim")
    fine = engine.recognize(scanned(page, 11), dpi=DPI)
    assert fine.confidence is not None and "仓库" in fine.text
    engine.timeout_s = 0.001  # a page that takes longer than its limit
    sections, problems = ocr.ocr_pages([(1, scanned(page, 12), DPI)], engine)
    assert sections == [] and problems == ["page 1: OCR failed (tesseract timed out after 0.001 s)"]


def test_without_tesseract_the_file_fails_with_what_to_install(
    assistant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image_pdf(folder / "scan.pdf", [scanned(chinese_page(), 13)])
    scanned(chinese_page(), 14).save(folder / "scan.jpg")
    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # the loader workers start with this PATH: no tesseract on it
    assert shutil.which("tesseract") is None
    summary = assistant.ingest(folder, collection="c")
    reasons = {Path(f.path).name: f.error for f in summary.failures}
    assert set(reasons) == {"scan.pdf", "scan.jpg"}
    for reason in reasons.values():
        assert f"OCR needs tesseract-ocr: {ocr.INSTALL_HINT}" in reason


def test_a_missing_language_is_named_with_its_package(tmp_path: Path) -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed")
    chinese_page().save(tmp_path / "page.png")
    with (
        ocr.for_file(ocr.OcrSettings(languages="eng+zzz_notalang")),
        pytest.raises(
            LoaderError, match=r"OCR language zzz_notalang is not installed.*tesseract-ocr-zzz-notalang"
        ),
    ):
        load_file(tmp_path / "page.png")


def _tesseracts_under(pid: int) -> set[int]:
    """Running tesseract processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if comm == "tesseract" and int(rest[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_tesseract
def test_a_killed_loader_worker_takes_its_tesseract_with_it(tmp_path: Path) -> None:
    """OCR runs inside the loader worker's limits: a worker killed mid-page (its memory, a stuck parser after
    OCR, an operator) leaves no Tesseract running. (At the time limit OCR stops by itself: see
    test_ocr_time_limit.py.)"""
    # Full pages (a few seconds each), so a Tesseract left running would still be at work after the kill.
    pdf = image_pdf(tmp_path / "long.pdf", [scanned(chinese_page(lines=28), seed) for seed in range(20, 26)])
    note = tmp_path / "note.txt"
    note.write_text("a first file, so the worker is running before the scan is sent", encoding="utf-8")
    with LoaderPool(1, timeout_s=120.0) as pool:
        pool.load(note, max_bytes=1 << 30)
        (worker,) = pool.worker_pids()
        outcome: list[BaseException] = []

        def load() -> None:
            try:
                pool.load(pdf, max_bytes=1 << 30)
            except BaseException as exc:  # handed to the test's thread
                outcome.append(exc)

        loading = threading.Thread(target=load)
        loading.start()
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            seen.update(_tesseracts_under(worker))
            time.sleep(0.05)
        assert seen, "no tesseract ran under the loader worker"
        os.kill(worker, signal.SIGKILL)
        loading.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], LoaderError), outcome
        assert "died of SIGKILL" in str(outcome[0])
        deadline = time.monotonic() + 0.5
        while any(_alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in seen), "tesseract outlived its killed loader worker"
        # The memory limit is inherited, and a page fits in it: the replacement worker reads a scan.
        image_pdf(tmp_path / "short.pdf", [scanned(chinese_page(), 30)])
        doc = pool.load(tmp_path / "short.pdf", max_bytes=1 << 30)
        assert "仓库" in doc.text and doc.sections[0].ocr_confidence is not None


class _ScriptedEngine(LLMEngine):
    """The real small model's stats and token counts, but a known reply (so the citation is known)."""

    def __init__(self, inner: LLMEngine, reply: str) -> None:
        self.inner, self.info, self.reply = inner, inner.info, reply

    @property
    def engine_name(self) -> str:
        return self.inner.engine_name

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages) -> int:
        return self.inner.count_chat_tokens(messages)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        items = list(self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature))
        yield self.reply
        yield dataclasses.replace(items[-1], text=self.reply)


@needs_tesseract
def test_an_answer_cites_the_scanned_page_as_ocr(assistant, small_llm, pdf_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image_pdf(
        folder / "scan.pdf", [scanned(chinese_page(), 40), scanned(render(pdf_dir / "fake-memo.pdf", 0), 41)]
    )
    assistant.settings.max_answer_tokens = 8
    assistant.ingest(folder, collection="scans")
    question = "How many bottles of water were delivered?"
    assistant.use_llm(_ScriptedEngine(small_llm, "x"))
    probe = assistant.ask(question)
    ref = next(p["ref"] for p in probe.passages if "20,000 bottles" in p["text"])
    assistant.use_llm(_ScriptedEngine(small_llm, f"20,000 bottles of water were delivered [{ref}]."))
    answer = assistant.ask(question)
    (citation,) = [c for c in answer.citations if c.ref == ref]
    assert re.fullmatch(r"page 2, OCR, confidence \d{1,3}%", citation.location), citation.location
