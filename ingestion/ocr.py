"""OCR for pages without a text layer (scans, photos): Tesseract from the distribution's packages.

Why Tesseract: it runs offline, reads English and Simplified Chinese with the packaged models
(`tesseract-ocr-eng`, `tesseract-ocr-chi-sim`), needs no GPU and no model download, and reports a
confidence per word. It runs as a subprocess (no shell), one thread per call (the loader pool already
runs one worker per core), killed with its parent, so it stays inside the loader's time and memory
limits (it inherits the worker's address-space limit).

Each page's confidence is the mean word confidence of Tesseract's TSV output (0-100). A page with no
words (blank, or nothing legible) or a failed Tesseract run is reported per page by the caller, never
dropped silently; a missing Tesseract or language fails the file with what to install.

Settings (environment, read by the loader workers): SPARQ_OCR_LANGUAGES (default "eng+chi_sim"),
SPARQ_OCR_DPI (render resolution for PDF pages, default 300).
"""

from __future__ import annotations

import csv
import ctypes
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

from ingestion.loaders.base import LoaderError, Section

ENGINE = "tesseract"
DEFAULT_LANGUAGES = "eng+chi_sim"
DEFAULT_DPI = 300
INSTALL_HINT = "apt-get install -y tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
PAGE_TIMEOUT_S = 100.0  # one page; the loader's per-file limit (120 s by default) still applies on top
MAX_PIXELS = 60_000_000  # larger images are scaled down first: more pixels cost memory, not accuracy
_LANGUAGE = re.compile(r"^[A-Za-z0-9_]+$")
_PACKAGE = {"eng": "tesseract-ocr-eng", "chi_sim": "tesseract-ocr-chi-sim", "chi_tra": "tesseract-ocr-chi-tra"}
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uff00-\uffef]")
_WORDLIKE = re.compile(r"\w")


class OcrError(LoaderError):
    """One page could not be read by OCR (Tesseract failed or timed out)."""


class OcrUnavailable(LoaderError):
    """OCR cannot run at all here (Tesseract or a language model is not installed)."""


@dataclass(frozen=True)
class OcrSettings:
    languages: str = DEFAULT_LANGUAGES
    dpi: int = DEFAULT_DPI

    def __post_init__(self) -> None:
        parts = self.languages.split("+")
        if not all(_LANGUAGE.match(p) for p in parts):
            raise ValueError(f"OCR languages must look like 'eng+chi_sim', got {self.languages!r}")
        if not 72 <= self.dpi <= 600:
            raise ValueError(f"OCR resolution must be between 72 and 600 dpi, got {self.dpi}")


def settings_from_env(environ: Mapping[str, str] | None = None) -> OcrSettings:
    env = os.environ if environ is None else environ
    languages = env.get("SPARQ_OCR_LANGUAGES", "").strip() or DEFAULT_LANGUAGES
    raw_dpi = env.get("SPARQ_OCR_DPI", "").strip()
    try:
        dpi = int(raw_dpi) if raw_dpi else DEFAULT_DPI
    except ValueError as exc:
        raise LoaderError(f"SPARQ_OCR_DPI must be a whole number of dots per inch, got {raw_dpi!r}") from exc
    try:
        return OcrSettings(languages=languages, dpi=dpi)
    except ValueError as exc:
        raise LoaderError(str(exc)) from exc


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float | None  # mean word confidence, 0-100; None when no word was recognised
    words: int


def _binary() -> str:
    path = shutil.which("tesseract")
    if path is None:
        raise OcrUnavailable(f"OCR needs tesseract-ocr: {INSTALL_HINT}")
    return path


@lru_cache(maxsize=8)
def _installed_languages(binary: str) -> frozenset[str]:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [binary, "--list-langs"], capture_output=True, timeout=30, check=False, env=_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailable(f"tesseract does not run ({exc}); reinstall it: {INSTALL_HINT}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise OcrUnavailable(f"tesseract --list-langs failed ({detail}); reinstall it: {INSTALL_HINT}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip())


def _env() -> dict[str, str]:
    """One thread per Tesseract: the loader pool already runs one worker per core."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TESSDATA_PREFIX", "HOME")}
    env["OMP_THREAD_LIMIT"] = "1"
    return env


_PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """A loader worker killed at its time limit takes its Tesseract with it (Linux PR_SET_PDEATHSIG).

    Resolved before the fork: the child only makes the system call."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class TesseractEngine:
    """Recognise page images with the `tesseract` command line program."""

    name = ENGINE

    def __init__(self, languages: str = DEFAULT_LANGUAGES, *, timeout_s: float = PAGE_TIMEOUT_S) -> None:
        OcrSettings(languages=languages)  # validates the language list
        self.languages = languages
        self.timeout_s = timeout_s
        self._checked: str | None = None

    def check(self) -> str:
        """The binary, once it is known to run with every requested language; else OcrUnavailable."""
        if self._checked is None:
            binary = _binary()
            installed = _installed_languages(binary)
            missing = [lang for lang in self.languages.split("+") if lang not in installed]
            if missing:
                packages = " ".join(_PACKAGE.get(m, f"tesseract-ocr-{m.replace('_', '-')}") for m in missing)
                raise OcrUnavailable(
                    f"OCR language {'+'.join(missing)} is not installed for tesseract: apt-get install -y {packages}"
                )
            self._checked = binary
        return self._checked

    def recognize(self, image: Image.Image, *, dpi: int | None = None) -> OcrResult:
        binary = self.check()
        image = _prepared(image)
        buf = io.BytesIO()
        image.save(buf, format="PPM")  # uncompressed PGM/PPM: nothing to encode or decode, read from stdin
        args = [binary, "stdin", "stdout", "-l", self.languages, "--psm", "3"]
        if dpi:
            args += ["--dpi", str(dpi)]
        args.append("tsv")
        # Only in a single-threaded process (the loader worker): a hook between fork and exec is unsafe
        # beside other threads, and there the orphan still ends with its page (its output pipe is gone).
        preexec = _die_with_parent if _PRCTL is not None and threading.active_count() == 1 else None
        try:
            done = subprocess.run(  # noqa: S603 - fixed program and arguments, no shell
                args, input=buf.getvalue(), capture_output=True, timeout=self.timeout_s, check=False,
                env=_env(), preexec_fn=preexec,  # noqa: PLW1509 - the worker is single-threaded
            )
        except subprocess.TimeoutExpired as exc:
            raise OcrError(f"tesseract timed out after {self.timeout_s:g} s") from exc
        except OSError as exc:
            raise OcrError(f"tesseract could not start: {exc}") from exc
        if done.returncode != 0:
            detail = " ".join(done.stderr.decode("utf-8", "replace").split())[:300]
            how = f"died of {signal.Signals(-done.returncode).name}" if done.returncode < 0 else (
                f"exited with code {done.returncode}")
            raise OcrError(f"tesseract {how}" + (f": {detail}" if detail else ""))
        return parse_tsv(done.stdout.decode("utf-8", "replace"))


def _prepared(image: Image.Image) -> Image.Image:
    """Grey levels (colour adds nothing to recognition), scaled down when the image is huge."""
    if image.mode in ("RGBA", "LA", "PA", "P"):  # transparent areas are paper, not ink
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode != "L":
        image = image.convert("L")
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        factor = (MAX_PIXELS / pixels) ** 0.5
        image = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))))
    return image


def _joined(words: list[str]) -> str:
    """Words of a line with spaces, except between two CJK characters (Chinese has no spaces)."""
    out = ""
    for word in words:
        if out and not (_CJK.match(out[-1]) and _CJK.match(word[0])):
            out += " "
        out += word
    return out


def parse_tsv(tsv: str) -> OcrResult:
    """Text (lines, blank lines between paragraphs) and mean word confidence from Tesseract's TSV."""
    paragraphs: dict[tuple[int, int, int], dict[int, list[str]]] = {}
    confidences: list[float] = []
    reader = csv.reader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if not header or header[:2] != ["level", "page_num"]:
        raise OcrError("tesseract wrote no TSV output")
    for row in reader:
        if len(row) < 12 or row[0] != "5":
            continue
        text = row[11].strip()
        try:
            conf = float(row[10])
        except ValueError:
            continue
        if not text or conf < 0:
            continue
        key = (int(row[1]), int(row[2]), int(row[3]))
        paragraphs.setdefault(key, {}).setdefault(int(row[4]), []).append(text)
        confidences.append(conf)
    blocks = ["\n".join(_joined(words) for _, words in sorted(lines.items())) for _, lines in sorted(paragraphs.items())]
    text = "\n\n".join(b for b in blocks if b.strip())
    if not _WORDLIKE.search(text):  # only specks read as punctuation: nothing legible on the page
        return OcrResult("", None, 0)
    return OcrResult(text, sum(confidences) / len(confidences), len(confidences))


def default_engine() -> TesseractEngine:
    return TesseractEngine(settings_from_env().languages)


def ocr_pages(
    pages: Iterable[tuple[int, Image.Image, int | None]], engine: TesseractEngine | None = None
) -> tuple[list[Section], list[str]]:
    """OCR each (page number, image, dpi): sections for the pages read, a problem line for each that was not.

    OcrUnavailable (no Tesseract, no language model) is raised before any page is tried."""
    engine = engine or default_engine()
    engine.check()
    sections: list[Section] = []
    problems: list[str] = []
    for number, image, dpi in pages:
        try:
            result = engine.recognize(image, dpi=dpi)
        except OcrError as exc:
            problems.append(f"page {number}: OCR failed ({exc})")
            continue
        if not result.text:
            problems.append(f"page {number}: OCR found no text (blank or illegible)")
            continue
        sections.append(Section(text=result.text, page=number, ocr_confidence=round(result.confidence or 0.0, 1)))
    return sections, problems


def describe(problems: list[str]) -> str:
    """The per-page problems as one line for the document's error field."""
    return "not indexed: " + "; ".join(problems)


def frames(image: Image.Image) -> Iterator[Image.Image]:
    """Every frame of a (multi-page TIFF) image, in order."""
    count = getattr(image, "n_frames", 1)
    for index in range(count):
        image.seek(index)
        yield image.copy()


__all__ = [
    "DEFAULT_DPI",
    "DEFAULT_LANGUAGES",
    "ENGINE",
    "INSTALL_HINT",
    "OcrError",
    "OcrResult",
    "OcrSettings",
    "OcrUnavailable",
    "TesseractEngine",
    "default_engine",
    "describe",
    "frames",
    "ocr_pages",
    "parse_tsv",
    "settings_from_env",
]
