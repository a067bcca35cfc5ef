"""OCR settings are declared with the others: validated at start-up (a wrong value is named before any file is
read), and the loader workers get them from the product's settings, not from their own environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from ingestion import ocr
from ingestion.isolation import LoaderPool
from ingestion.loaders import LoaderError


@pytest.fixture(autouse=True)
def _no_site_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("SPARQ_OCR_LANGUAGES", "SPARQ_OCR_DPI", "SPARQ_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


def test_ocr_settings_default_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.ocr_languages, s.ocr_dpi) == (ocr.DEFAULT_LANGUAGES, ocr.DEFAULT_DPI) == ("eng+chi_sim", 300)
    monkeypatch.setenv("SPARQ_OCR_LANGUAGES", "eng")
    monkeypatch.setenv("SPARQ_OCR_DPI", "200")
    s = Settings()
    assert (s.ocr_languages, s.ocr_dpi) == ("eng", 200)
    assert "Tesseract" in Settings.model_fields["ocr_languages"].description
    assert "dpi" in Settings.model_fields["ocr_dpi"].description


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SPARQ_OCR_LANGUAGES",
            "eng,chi_sim",
            r"SPARQ_OCR_LANGUAGES must be Tesseract language codes joined by '\+'",
        ),
        ("SPARQ_OCR_LANGUAGES", "eng+", r"got 'eng\+'"),
        ("SPARQ_OCR_LANGUAGES", "", r"SPARQ_OCR_LANGUAGES must be"),
        ("SPARQ_OCR_LANGUAGES", "eng;rm -rf", r"SPARQ_OCR_LANGUAGES must be"),
        ("SPARQ_OCR_DPI", "30", r"ocr_dpi\n.*greater than or equal to 72"),
        ("SPARQ_OCR_DPI", "2400", r"ocr_dpi\n.*less than or equal to 600"),
        ("SPARQ_OCR_DPI", "high", r"ocr_dpi\n.*valid integer"),
    ],
)
def test_a_wrong_ocr_setting_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_the_loader_workers_use_the_settings_they_are_given_not_their_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A language that is not installed, given to the pool, is what the worker's OCR asks Tesseract for."""
    if ocr.shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed")
    from PIL import Image

    Image.new("L", (400, 200), 255).save(tmp_path / "page.png")
    monkeypatch.setenv("SPARQ_OCR_LANGUAGES", "eng")  # the worker inherits this; it must not read it
    settings = Settings(ocr_languages="eng+zzz_notalang")
    given = ocr.OcrSettings(languages=settings.ocr_languages, dpi=settings.ocr_dpi)
    missing = r"OCR language zzz_notalang is not installed.*tesseract-ocr-zzz-notalang"
    with LoaderPool(1, ocr=given) as pool, pytest.raises(LoaderError, match=missing):
        pool.load(tmp_path / "page.png", max_bytes=1 << 20)


def test_the_assistant_builds_its_loader_pool_with_the_ocr_settings(tmp_path: Path) -> None:
    from app.assistant import Assistant

    settings = Settings(data_dir=tmp_path / "data", ocr_languages="eng", ocr_dpi=150, loader_workers=1)
    assistant = Assistant(settings)
    try:
        pool = assistant._loader_pool()
        assert pool.ocr == ocr.OcrSettings(languages="eng", dpi=150)
    finally:
        assistant.close()
