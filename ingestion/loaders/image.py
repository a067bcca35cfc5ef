"""Images (.png, .jpg, .tiff: scans, photos of documents) read by OCR; each TIFF frame is a page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ingestion import ocr

from .base import LoadedDocument, LoaderError

_MIN_TRUSTED_DPI = 100  # 72/96 dpi in a scan's header is a default, not a measurement: let Tesseract estimate


class ImageLoader:
    """Scans and photos of documents, which hold text only OCR can read."""

    def __init__(self, mime: str, extensions: tuple[str, ...]) -> None:
        self.mime = mime
        self.extensions = extensions

    def load(self, path: Path) -> LoadedDocument:
        """The image's text by OCR, one page per frame; refused when OCR is not installed."""
        job = (
            ocr.current_job()
        )  # the product's OCR settings and this file's time limit (set by the loader worker)
        engine = ocr.TesseractEngine(job.settings.languages)
        try:
            engine.check()
        except ocr.OcrUnavailable as exc:
            raise LoaderError(f"an image is read only by OCR, and {exc}") from exc
        try:
            image = Image.open(path)
        except UnidentifiedImageError as exc:
            raise LoaderError(f"not a readable image: {exc}") from exc
        except Image.DecompressionBombError as exc:
            raise LoaderError(f"image too large to read safely: {exc}") from exc
        with image:
            count = getattr(image, "n_frames", 1)
            numbers = range(1, count + 1)
            sections, problems = ocr.ocr_pages(_pages(image), engine, numbers=numbers, limit=job.limit)
        metadata = {"pages": str(count)}
        if problems:
            metadata["warnings"] = ocr.describe(problems)
        if not sections:
            raise LoaderError("no text found by OCR in this image: " + "; ".join(problems))
        return LoadedDocument(sections=sections, mime=self.mime, title=None, metadata=metadata)


def _pages(image: Image.Image) -> Iterator[tuple[int, Image.Image, int | None]]:
    dpi = _dpi(image)
    for number, frame in enumerate(ocr.frames(image), start=1):
        yield number, ImageOps.exif_transpose(frame), dpi  # a phone photo is upright as shown, not as stored


def _dpi(image: Image.Image) -> int | None:
    value = image.info.get("dpi")
    try:
        dpi = round(float(value[0])) if value else None
    except (TypeError, ValueError, IndexError):
        return None
    return dpi if dpi is not None and _MIN_TRUSTED_DPI <= dpi <= 1200 else None
