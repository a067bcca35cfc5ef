"""Backend selection and its configuration errors."""

from __future__ import annotations

import pytest

from model import ModelError, ModelNotFound, create_engine


def test_unknown_backend_is_named():
    with pytest.raises(ModelError, match="unknown LLM backend 'vllm2'"):
        create_engine("vllm2", "x")


def test_openai_needs_base_url():
    pytest.importorskip("openai")
    with pytest.raises(ModelError, match="base_url"):
        create_engine("openai", "m", base_url=None)


def test_llamacpp_missing_file(tmp_path, llama_cpp_mod):
    with pytest.raises(ModelNotFound, match="not found"):
        create_engine("llamacpp", str(tmp_path / "nope.gguf"))


def test_transformers_missing_dir(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(ModelNotFound):
        create_engine("transformers", str(tmp_path / "nope"))
