"""OCR for pages without a text layer (scans, photos): Tesseract from the distribution's packages.

Why Tesseract: it runs offline, reads English and Simplified Chinese with the packaged models
(`tesseract-ocr-eng`, `tesseract-ocr-chi-sim`), needs no GPU and no model download, and reports a
confidence per word. It runs as a subprocess (no shell), one thread per call (the loader pool already
runs one worker per core), killed with its parent, so it stays inside the loader's time and memory
limits (it inherits the worker's address-space limit).

Each page's confidence is the mean word confidence of Tesseract's TSV output (0-100). A page with no
words (blank, or nothing legible) or a failed Tesseract run is reported per page by the caller, never
dropped silently; a missing Tesseract or language fails the file with what to install.

Settings (`OcrSettings`: languages, render resolution) come from the product's settings (SPARQ_OCR_*), given
to the loader pool, which sends them with each file; nothing here reads the environment. The worker sets them,
with the file's time limit, around each file (`for_file`); a loader reads them with `current_job()`. Outside a
worker (a direct `load_file`) the defaults apply and there is no time limit.

Time limit: a long scan must not time out whole (a 200-page scan at a few seconds a page, under a 120 s
limit, would lose every page). OCR stops just before the file's limit, stopping a page being read, keeps the
pages read, and names the others per range ("pages 41-200 not OCR'd: time limit of 120 s reached").
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
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import Image

from ingestion.loaders.base import LoaderError, Section

ENGINE = "tesseract"
DEFAULT_LANGUAGES = "eng+chi_sim"
DEFAULT_DPI = 300
INSTALL_HINT = "apt-get install -y tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
PAGE_TIMEOUT_S = 100.0  # one page; the file's time limit (`TimeLimit`) applies on top
RESERVE_SHARE = 0.1  # of the file's time limit, kept after OCR stops to build and send the reply...
RESERVE_MAX_S = 5.0  # ...at most this: the reply of a long scan takes milliseconds
MAX_PIXELS = 60_000_000  # larger images are scaled down first: more pixels cost memory, not accuracy
_LANGUAGE = re.compile(r"^[A-Za-z0-9_]+$")
_PACKAGE = {
    "eng": "tesseract-ocr-eng",
    "chi_sim": "tesseract-ocr-chi-sim",
    "chi_tra": "tesseract-ocr-chi-tra",
}
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uff00-\uffef]")
_WORDLIKE = re.compile(r"\w")


class OcrError(LoaderError):
    """One page could not be read by OCR (Tesseract failed or timed out)."""


class OcrTimeout(OcrError):
    """Tesseract was stopped at its time limit (the page's, or what was left of the file's)."""


class OcrUnavailable(LoaderError):
    """OCR cannot run at all here (Tesseract or a language model is not installed)."""


@dataclass(frozen=True)
class OcrSettings:
    """Tesseract's languages ("eng+chi_sim") and the highest resolution scanned PDF pages are rendered at."""

    languages: str = DEFAULT_LANGUAGES
    dpi: int = DEFAULT_DPI

    def __post_init__(self) -> None:
        parts = self.languages.split("+")
        if not all(_LANGUAGE.match(p) for p in parts):
            raise ValueError(f"OCR languages must look like 'eng+chi_sim', got {self.languages!r}")
        if not 72 <= self.dpi <= 600:
            raise ValueError(f"OCR resolution must be between 72 and 600 dpi, got {self.dpi}")


@dataclass(frozen=True)
class TimeLimit:
    """When OCR of one file stops: its loader time limit less a reserve to send what was read."""

    stop_at: float  # time.monotonic()
    limit_s: float  # the file's time limit, named in the warning

    @classmethod
    def for_file(cls, limit_s: float, *, started: float | None = None) -> TimeLimit:
        """`limit_s` after `started` (now), less a tenth of it, at most RESERVE_MAX_S."""
        if limit_s <= 0:
            raise ValueError(f"an OCR time limit must be positive, got {limit_s}")
        start = time.monotonic() if started is None else started
        return cls(start + limit_s - min(RESERVE_MAX_S, RESERVE_SHARE * limit_s), limit_s)

    def remaining(self) -> float:
        """Seconds left before OCR of this file must stop (negative once past)."""
        return self.stop_at - time.monotonic()

    def warning(self, numbers: Sequence[int]) -> list[str]:
        """One line per range of consecutive page numbers left unread."""
        return [f"{span} not OCR'd: time limit of {self.limit_s:g} s reached" for span in page_spans(numbers)]


@dataclass(frozen=True)
class OcrJob:
    """What OCR of the file being loaded runs with: its settings, and its time limit inside a loader worker."""

    settings: OcrSettings = field(default_factory=OcrSettings)
    limit: TimeLimit | None = None


_NO_JOB = OcrJob()
_JOB: ContextVar[OcrJob | None] = ContextVar("sparq_ocr_job", default=None)


@contextmanager
def for_file(settings: OcrSettings, limit: TimeLimit | None = None) -> Iterator[OcrJob]:
    """Set the OCR settings and time limit for the file loaded inside (the loader worker, per file)."""
    job = OcrJob(settings, limit)
    token = _JOB.set(job)
    try:
        yield job
    finally:
        _JOB.reset(token)


def current_job() -> OcrJob:
    """The settings and time limit of the file being loaded (defaults, no limit, outside `for_file`)."""
    return _JOB.get() or _NO_JOB


def page_spans(numbers: Sequence[int]) -> list[str]:
    """[1, 2, 3, 7] -> ["pages 1-3", "page 7"]: consecutive page numbers as one span."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return [f"page {a}" if a == b else f"pages {a}-{b}" for a, b in spans]


@dataclass(frozen=True)
class OcrResult:
    """The text OCR read from one image, with its confidence, so weak readings can be flagged."""

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
        done = subprocess.run(
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

    def recognize(
        self, image: Image.Image, *, dpi: int | None = None, timeout_s: float | None = None
    ) -> OcrResult:
        """One page; `timeout_s` (default: the engine's per-page limit) stops Tesseract with OcrTimeout."""
        binary = self.check()
        limit_s = self.timeout_s if timeout_s is None else timeout_s
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
            done = subprocess.run(
                args,
                input=buf.getvalue(),
                capture_output=True,
                timeout=limit_s,
                check=False,
                env=_env(),
                preexec_fn=preexec,
            )
        except subprocess.TimeoutExpired as exc:
            raise OcrTimeout(f"tesseract timed out after {limit_s:g} s") from exc
        except OSError as exc:
            raise OcrError(f"tesseract could not start: {exc}") from exc
        if done.returncode != 0:
            detail = " ".join(done.stderr.decode("utf-8", "replace").split())[:300]
            how = (
                f"died of {signal.Signals(-done.returncode).name}"
                if done.returncode < 0
                else (f"exited with code {done.returncode}")
            )
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
    blocks = [
        "\n".join(_joined(words) for _, words in sorted(lines.items()))
        for _, lines in sorted(paragraphs.items())
    ]
    text = "\n\n".join(b for b in blocks if b.strip())
    if not _WORDLIKE.search(text):  # only specks read as punctuation: nothing legible on the page
        return OcrResult("", None, 0)
    return OcrResult(text, sum(confidences) / len(confidences), len(confidences))


def ocr_pages(
    pages: Iterable[tuple[int, Image.Image, int | None]],
    engine: TesseractEngine | None = None,
    *,
    numbers: Sequence[int] | None = None,
    limit: TimeLimit | None = None,
) -> tuple[list[Section], list[str]]:
    """OCR each (page number, image, dpi): sections for the pages read, a problem line for each that was not.

    With a `limit`, OCR stops at it (a page being read is stopped; `pages` is not drawn on after it, so
    pages are rendered lazily and never past the limit); that page and those after it in `numbers` (the
    page numbers `pages` yields, in order) are named per range. OcrUnavailable (no Tesseract, no language
    model) is raised before any page is tried."""
    if limit is not None and numbers is None:
        raise ValueError("an OCR time limit needs the page numbers, to name the pages it leaves unread")
    engine = engine or TesseractEngine()
    engine.check()
    sections: list[Section] = []
    problems: list[str] = []
    iterator = iter(pages)
    handled: int | None = None  # the last page number read or reported
    while limit is None or limit.remaining() > 0:
        item = next(iterator, None)
        if item is None:
            return sections, problems
        number, image, dpi = item
        budget = None if limit is None else min(engine.timeout_s, limit.remaining())
        if budget is not None and budget <= 0:
            break
        try:
            result = engine.recognize(image, dpi=dpi, timeout_s=budget)
        except OcrTimeout as exc:
            if budget is not None and budget < engine.timeout_s:  # the file's limit, not the page's
                break
            problems.append(f"page {number}: OCR failed ({exc})")
        except OcrError as exc:
            problems.append(f"page {number}: OCR failed ({exc})")
        else:
            if result.text:
                confidence = round(result.confidence or 0.0, 1)
                sections.append(Section(text=result.text, page=number, ocr_confidence=confidence))
            else:
                problems.append(f"page {number}: OCR found no text (blank or illegible)")
        handled = number
    assert limit is not None and numbers is not None
    unread = list(numbers) if handled is None else list(numbers)[list(numbers).index(handled) + 1 :]
    return sections, problems + limit.warning(unread)


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
    "OcrJob",
    "OcrResult",
    "OcrSettings",
    "OcrTimeout",
    "OcrUnavailable",
    "TesseractEngine",
    "TimeLimit",
    "current_job",
    "describe",
    "for_file",
    "frames",
    "ocr_pages",
    "page_spans",
    "parse_tsv",
]
