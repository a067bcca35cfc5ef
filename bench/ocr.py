"""OCR accuracy and speed on scans: character accuracy (1 - CER) and pages per second, English and Chinese.

    python bench/ocr.py [--docs ../shared/data/unstructured_example_docs/example-docs]
                        [--cmrc ../shared/data/cmrc2018_dev/cmrc2018_dev.json] [--dpi 300]

English pages are real pages of the example PDFs, rendered with pypdfium2 and "scanned" (slight rotation,
grey noise, dust); the reference is the PDF's own text layer (pypdf). Chinese pages are paragraphs of the
CMRC 2018 dev set typeset with a CJK font and scanned the same way; the reference is the typeset text.
Each page is read with the language it needs ("eng", "chi_sim") and with sparq's default "eng+chi_sim".
Text is compared after NFKC, with whitespace collapsed (English) or removed (Chinese). Pages per second is
Tesseract's wall time per page (one thread, as in a loader worker); rendering is timed separately.
Last, the same pages scanned at 200 dpi are saved as image-only PDFs and read through `load_file` (render
at the scan's own resolution + OCR, default languages): the whole loader path. Writes bench/results/ocr.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pypdfium2 as pdfium  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from ingestion import ocr  # noqa: E402

ENGLISH_PAGES = [  # single-column pages, so reading order is not in question
    ("pdf/fake-memo.pdf", 0),
    ("pdf/a1977-backus-p21.pdf", 0),
    ("pdf/layout-parser-paper-fast.pdf", 0),
    ("pdf/layout-parser-paper-fast.pdf", 1),
    ("pdf/interface-config-guide-p93.pdf", 0),
    ("pdf/chevron-page.pdf", 0),
]
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


def levenshtein(a: str, b: str) -> int:
    """Edit distance, one numpy row at a time (insertions via a running minimum)."""
    if not a or not b:
        return len(a) + len(b)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    prev = cols.copy()
    for i, ch in enumerate(a, start=1):
        cost = (bb != ord(ch)).astype(np.int64)
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        cur = np.minimum.accumulate(cur - cols) + cols
        prev = cur
    return int(prev[-1])


def normalised(text: str, chinese: bool) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(text.split()) if chinese else " ".join(text.split())


def accuracy(reference: str, hypothesis: str, chinese: bool) -> float:
    ref, hyp = normalised(reference, chinese), normalised(hypothesis, chinese)
    return max(0.0, 1.0 - levenshtein(ref, hyp) / max(1, len(ref)))


def scanned(image: Image.Image, seed: int, angle: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    page = image.convert("L").rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=255)
    pixels = np.asarray(page, dtype=np.float32) + rng.normal(0, 12, page.size[::-1])
    specks = rng.random(pixels.shape)
    pixels[specks < 0.0008], pixels[specks > 0.9992] = 0, 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


def english_pages(docs: Path, dpi: int) -> tuple[list[tuple[str, Image.Image, str]], float]:
    pages, render_s = [], 0.0
    for i, (name, index) in enumerate(ENGLISH_PAGES):
        reference = PdfReader(docs / name).pages[index].extract_text()
        document = pdfium.PdfDocument(str(docs / name))
        t = time.perf_counter()
        image = document[index].render(scale=dpi / 72, grayscale=True).to_pil()
        render_s += time.perf_counter() - t
        document.close()
        pages.append((f"{name}#{index + 1}", scanned(image, i, 1.2 if i % 2 else -0.9), reference))
    return pages, render_s / len(ENGLISH_PAGES)


def chinese_pages(cmrc: Path, dpi: int, n: int = 4) -> list[tuple[str, Image.Image, str]]:
    fonts = [f for f in CJK_FONTS if Path(f).is_file()]
    if not fonts:
        raise SystemExit("no CJK font: apt-get install -y fonts-wqy-zenhei")
    font = ImageFont.truetype(fonts[0], size=round(dpi * 11 / 72))  # 11 pt
    data = json.loads(cmrc.read_text(encoding="utf-8"))["data"]
    contexts = [p["context"] for d in data for p in d["paragraphs"]]
    width, height, margin = int(8.27 * dpi), int(11.69 * dpi), dpi  # A4, one-inch margins
    line_h = int(font.size * 1.6)
    pages = []
    for k in range(n):
        text = "".join(contexts[k * 3 : (k + 1) * 3]).replace("\n", "")
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        lines, line = [], ""
        for ch in text:
            if font.getlength(line + ch) > width - 2 * margin:
                lines.append(line)
                line = ""
            line += ch
        lines.append(line)
        lines = lines[: (height - 2 * margin) // line_h]
        for j, ln in enumerate(lines):
            draw.text((margin, margin + j * line_h), ln, font=font, fill=0)
        pages.append((f"cmrc#{k + 1}", scanned(page, 100 + k, 0.8 if k % 2 else -1.1), "".join(lines)))
    return pages


def run(pages: list[tuple[str, Image.Image, str]], languages: str, dpi: int, chinese: bool) -> dict:
    engine = ocr.TesseractEngine(languages)
    accs, seconds, confs, per_page = [], 0.0, [], []
    for name, image, reference in pages:
        t = time.perf_counter()
        result = engine.recognize(image, dpi=dpi)
        elapsed = time.perf_counter() - t
        seconds += elapsed
        acc = accuracy(reference, result.text, chinese)
        accs.append(acc)
        confs.append(result.confidence or 0.0)
        per_page.append(
            {
                "page": name,
                "char_accuracy": round(acc, 4),
                "confidence": round(result.confidence or 0, 1),
                "seconds": round(elapsed, 2),
            }
        )
    return {
        "languages": languages,
        "pages": len(pages),
        "char_accuracy": round(float(np.mean(accs)), 4),
        "char_accuracy_min": round(float(np.min(accs)), 4),
        "mean_confidence": round(float(np.mean(confs)), 1),
        "pages_per_s": round(len(pages) / seconds, 3),
        "per_page": per_page,
    }


def through_pdf_loader(docs: Path, cmrc: Path, scan_dpi: int) -> dict:
    """The whole loader path on image-only PDFs of `scan_dpi` scans: pypdfium2 render + OCR, default languages."""
    import tempfile

    from ingestion.loaders import load_file

    out: dict[str, dict] = {}
    groups = {
        "eng_pages": (english_pages(docs, scan_dpi)[0], False),
        "chi_sim_pages": (chinese_pages(cmrc, scan_dpi), True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for group, (pages, chinese) in groups.items():
            accs, seconds, per_page = [], 0.0, []
            for name, image, reference in pages:
                path = Path(tmp) / "scan.pdf"
                image.save(path, "PDF", resolution=scan_dpi)
                t = time.perf_counter()
                text = load_file(path).text
                elapsed = time.perf_counter() - t
                seconds += elapsed
                accs.append(accuracy(reference, text, chinese))
                per_page.append(
                    {"page": name, "char_accuracy": round(accs[-1], 4), "seconds": round(elapsed, 2)}
                )
            out[group] = {
                "languages": ocr.DEFAULT_LANGUAGES,
                "pages": len(pages),
                "char_accuracy": round(float(np.mean(accs)), 4),
                "char_accuracy_min": round(float(np.min(accs)), 4),
                "pages_per_s": round(len(pages) / seconds, 3),
                "per_page": per_page,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "../shared/data/unstructured_example_docs/example-docs"
    )
    parser.add_argument("--cmrc", type=Path, default=ROOT / "../shared/data/cmrc2018_dev/cmrc2018_dev.json")
    parser.add_argument("--dpi", type=int, default=ocr.DEFAULT_DPI)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ocr.json")
    args = parser.parse_args()
    ocr.TesseractEngine("eng+chi_sim").check()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    eng, render_s = english_pages(args.docs, args.dpi)
    chi = chinese_pages(args.cmrc, args.dpi)
    results = {
        "eng_pages": {
            "eng": run(eng, "eng", args.dpi, False),
            "eng+chi_sim": run(eng, "eng+chi_sim", args.dpi, False),
        },
        "chi_sim_pages": {
            "chi_sim": run(chi, "chi_sim", args.dpi, True),
            "eng+chi_sim": run(chi, "eng+chi_sim", args.dpi, True),
        },
    }
    pdf_path = through_pdf_loader(args.docs, args.cmrc, 200)
    for group, r in pdf_path.items():
        print(
            f"{group:14s} image-only PDF of 200-dpi scans, load_file: char accuracy {r['char_accuracy']:.3f}"
            f" (min {r['char_accuracy_min']:.3f})  {r['pages_per_s']:.2f} pages/s"
        )
    for group, runs in results.items():
        for langs, r in runs.items():
            print(
                f"{group:14s} -l {langs:12s} char accuracy {r['char_accuracy']:.3f} (min {r['char_accuracy_min']:.3f})"
                f"  confidence {r['mean_confidence']:.0f}%  {r['pages_per_s']:.2f} pages/s"
            )
    version = ocr.subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=True)
    out = {
        "engine": f"{ocr.ENGINE} {version.stdout.split()[1]}",
        "dpi": args.dpi,
        "scan": "rotated 0.8-1.2 degrees, gaussian noise sigma 12, 0.16% dust",
        "render_s_per_page": round(render_s, 3),
        "threads_per_page": 1,
        "load_average_at_start": round(load, 2),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "seconds_total": round(time.perf_counter() - started, 1),
        **results,
        "image_only_pdf_200dpi_scans_load_file": pdf_path,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {out['seconds_total']} s")


if __name__ == "__main__":
    main()
