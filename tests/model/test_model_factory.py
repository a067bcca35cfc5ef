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


def test_every_registered_engine_module_builds_its_engine():
    """The registry is the one list of engines: each entry names a module with `build(EngineRequest)`."""
    import importlib
    import inspect

    from model.factory import BACKENDS, ENGINES

    assert BACKENDS == tuple(ENGINES) == ("llamacpp", "ik_llama", "transformers", "openai")
    for name, module_name in ENGINES.items():
        build = importlib.import_module(module_name).build
        assert list(inspect.signature(build).parameters) == ["request"], name


def test_a_transformers_engine_needs_a_checkpoint():
    with pytest.raises(ModelError, match="needs a checkpoint directory"):
        create_engine("transformers", None)
