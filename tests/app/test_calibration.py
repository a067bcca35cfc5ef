"""Calibrating the MoE build on the customer's documents: sampling the store, the prompt shape, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.calibration import document_passages
from model.moe.calibration import CALIBRATION_QUESTION, document_calibration_samples
from model.prompting import Passage, grounded_messages, system_prompt

pytestmark = pytest.mark.db

EN = [
    "The travel policy covers flights, hotels and meals for trips longer than one day.",
    "Expense claims must be filed within thirty days with the original receipts attached.",
    "New employees receive a laptop, a badge and an onboarding buddy in their first week.",
    "The quarterly security training is mandatory for everyone with access to customer data.",
]
ZH = [
    "差旅政策涵盖超过一天的出差所需的机票、酒店和餐饮费用。",
    "报销申请必须在三十天内提交，并附上原始收据。",
    "新员工在入职第一周会领到笔记本电脑、工牌，并有一位入职伙伴。",
]


def _write(folder, texts, stem):
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"{stem}-{i}.md").write_text(f"# {stem} {i}\n\n{text}\n", encoding="utf-8")


@pytest.fixture
def two_collections(tmp_path, assistant):
    _write(tmp_path / "hr", EN, "policy")
    _write(tmp_path / "zh", ZH, "zhengce")
    assistant.ingest(tmp_path / "hr", collection="hr")
    assistant.ingest(tmp_path / "zh", collection="zh")
    return tmp_path


def test_document_passages_sample_only_the_named_collections(assistant, two_collections):
    hr = document_passages(assistant.engine, ["hr"], 10**6)
    assert sorted(text for text, _ in hr.passages) == sorted(f"policy {i}\n\n{t}" for i, t in enumerate(EN))
    assert all(source.startswith("policy") for _, source in hr.passages)
    zh = document_passages(assistant.engine, ["zh"], 10**6)
    everything = document_passages(assistant.engine, None, 10**6)
    assert len(everything.passages) == len(EN) + len(ZH) and everything.tokens == hr.tokens + zh.tokens


def test_document_passages_stop_at_the_token_budget_and_are_reproducible(assistant, two_collections):
    everything = document_passages(assistant.engine, None, 10**6)
    few = document_passages(assistant.engine, None, 20)
    assert 1 <= len(few.passages) < len(everything.passages) and few.tokens >= 20
    assert few.passages == everything.passages[: len(few.passages)]  # one seeded order, cut at the budget
    assert document_passages(assistant.engine, None, 20).fingerprint == few.fingerprint
    other_seed = document_passages(assistant.engine, None, 10**6, seed=1)
    assert other_seed.fingerprint != everything.fingerprint
    assert sorted(other_seed.passages) == sorted(everything.passages)


def test_changed_documents_change_the_fingerprint(assistant, two_collections):
    before = document_passages(assistant.engine, ["hr"], 10**6).fingerprint
    (two_collections / "hr" / "policy-0.md").write_text("# policy 0\n\nThe travel policy was withdrawn.\n")
    assistant.ingest(two_collections / "hr", collection="hr")
    after = document_passages(assistant.engine, ["hr"], 10**6)
    assert after.fingerprint != before
    assert any("withdrawn" in text for text, _ in after.passages)


def test_document_passages_errors_name_the_cause(assistant, two_collections, tmp_path):
    with pytest.raises(ValueError, match="no such collection: nope"):
        document_passages(assistant.engine, ["hr", "nope"], 100)
    (tmp_path / "empty").mkdir()
    assistant.ingest(tmp_path / "empty", collection="empty")
    with pytest.raises(ValueError, match="collections empty holds no ingested text"):
        document_passages(assistant.engine, ["empty"], 100)
    with pytest.raises(ValueError, match="tokens must be"):
        document_passages(assistant.engine, None, 0)


def test_calibration_chats_are_the_answer_prompt_in_the_passages_language():
    passages = [
        (EN[0], "travel.pdf, page 1"),
        (EN[1], "expenses.docx"),
        (ZH[0], "差旅.md"),
        (ZH[1], "报销.md"),
        (EN[2], "onboarding.md"),
    ]
    chats = list(document_calibration_samples(passages, per_prompt=2))
    assert len(chats) == 3  # 2 + 2 + the last one alone
    first = [Passage(1, EN[0], "travel.pdf, page 1"), Passage(2, EN[1], "expenses.docx")]
    assert chats[0] == grounded_messages(CALIBRATION_QUESTION["en"], first, "en")
    assert "[1] (travel.pdf, page 1)" in chats[0][1]["content"]
    assert (
        chats[1][0]["content"] == system_prompt("zh") and CALIBRATION_QUESTION["zh"] in chats[1][1]["content"]
    )
    assert "[1] (onboarding.md)" in chats[2][1]["content"] and "[2]" not in chats[2][1]["content"]
    with pytest.raises(ValueError):
        next(document_calibration_samples(passages, per_prompt=0))


@pytest.fixture
def cli_env(monkeypatch, tmp_path, database_url, embedder):
    import app.assistant as assistant_module

    monkeypatch.setenv("SPARQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPARQ_DATABASE_URL", database_url)
    monkeypatch.setattr(assistant_module.Assistant, "embedder", property(lambda self: embedder))
    return tmp_path


def test_build_from_documents_refuses_bad_options_before_building(cli_env):
    from app.assistant import SparqError
    from app.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["model", "build-default", "--collection", "hr"])
    assert result.exit_code != 0 and "only with --from-documents" in result.output
    result = runner.invoke(cli, ["model", "build-default", "--from-documents", "--tokens", "10"])
    assert result.exit_code != 0 and "at least 256" in result.output
    result = runner.invoke(cli, ["model", "build-default", "--from-documents"])
    assert isinstance(result.exception, SparqError) and "holds no ingested text" in str(result.exception)
    assert not (cli_env / "data" / "models").exists()  # nothing was joined or built


@pytest.mark.slow
def test_build_from_documents_end_to_end_on_the_small_source(cli_env, monkeypatch):
    """The real build on the 0.5B source, calibrated on ingested text, kept beside the default."""
    pytest.importorskip("llama_cpp")
    from app.cli import cli
    from model.base import ModelNotFound
    from model.moe.source_weights import SOURCES, part_files

    try:
        part_files(SOURCES["qwen2.5-coder-0.5b"])
    except ModelNotFound as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("SPARQ_DEFAULT_SOURCE", "qwen2.5-coder-0.5b")
    _write(cli_env / "hr", EN * 20, "policy")  # ~1,000 tokens of text, repeated under different titles
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", str(cli_env / "hr"), "--collection", "hr"]).exit_code == 0
    result = runner.invoke(cli, ["model", "build-default", "--from-documents", "--tokens", "512"])
    assert result.exit_code == 0, result.output
    path = cli_env / "data" / "models" / "sparq-moe-qwen2.5-coder-0.5b-documents" / "model-q4_k_m.gguf"
    assert path.is_file() and f"SPARQ_LLM_MODEL={path}" in result.output
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["calibration"]["source"] == "custom" and manifest["calibration"]["tokens_captured"] == 512
    assert isinstance(manifest["custom_calibration"], str)  # the fingerprint of the sampled text
    assert not (
        cli_env / "data" / "models" / "sparq-moe-qwen2.5-coder-0.5b"
    ).exists()  # the default untouched
    built = path.stat().st_mtime_ns
    again = runner.invoke(cli, ["model", "build-default", "--from-documents", "--tokens", "512"])
    assert again.exit_code == 0 and path.stat().st_mtime_ns == built  # same documents: reused, not rebuilt

    assert manifest["refit_lambda"] is None  # the default recipe: the exact split
    assert "rel_err_router_refit" not in manifest["calibration"]["per_layer"][0]

    refit = runner.invoke(cli, ["model", "build-default", "--from-documents", "--tokens", "512", "--refit"])
    assert refit.exit_code == 0, refit.output
    refit_path = (
        cli_env / "data" / "models" / "sparq-moe-qwen2.5-coder-0.5b-documents-refit" / "model-q4_k_m.gguf"
    )
    assert refit_path.is_file() and f"SPARQ_LLM_MODEL={refit_path}" in refit.output
    m = json.loads((refit_path.parent / "manifest.json").read_text())
    assert m["refit_lambda"] == 0.1 and all(
        "rel_err_router_refit" in layer for layer in m["calibration"]["per_layer"]
    )
    assert m["top_k"] == m["train_top_k"]  # served at the top-k the refit was fitted to
    assert path.stat().st_mtime_ns == built  # the plain documents build is kept
