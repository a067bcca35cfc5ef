"""Settings: environment over TOML over defaults, validated at construction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_defaults_environment_and_toml(monkeypatch, tmp_path):
    for key in ("SPARQ_DATA_DIR", "SPARQ_DATABASE_URL", "SPARQ_CHUNK_TOKENS", "SPARQ_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.data_dir.as_posix() == "sparq-data"
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'sparq-data' / 'sparq.db')}"

    toml = tmp_path / "site.toml"
    toml.write_text('data_dir = "/srv/sparq"\nchunk_tokens = 300\nllm_backend = "openai"\n')
    monkeypatch.setenv("SPARQ_CONFIG_FILE", str(toml))
    monkeypatch.setenv("SPARQ_CHUNK_TOKENS", "180")  # the environment wins over the file
    s = Settings()
    assert (s.data_dir.as_posix(), s.chunk_tokens, s.llm_backend) == ("/srv/sparq", 180, "openai")
    monkeypatch.setenv("SPARQ_DATABASE_URL", "postgresql+psycopg://u@db/sparq")
    assert Settings().resolved_database_url == "postgresql+psycopg://u@db/sparq"


def test_invalid_settings_are_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError):
        Settings(chunk_tokens=8)
    with pytest.raises(ValueError):
        Settings(chunk_tokens=64, chunk_overlap_tokens=64)
    with pytest.raises(ValidationError):
        Settings(llm_backend="magic")
    monkeypatch.setenv("SPARQ_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_settings_take_their_engine_names_from_the_registry():
    from pydantic import ValidationError

    from app.config import Settings
    from model.factory import BACKENDS

    for name in BACKENDS:
        assert Settings(llm_backend=name.upper()).llm_backend == name
    with pytest.raises(
        ValidationError, match="unknown LLM backend 'magic'; choose one of llamacpp, ik_llama"
    ):
        Settings(llm_backend="magic")
