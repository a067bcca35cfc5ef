"""Answer scoring against the official scorers' rules, and `eval qa` end to end on a tiny SQuAD file."""

from __future__ import annotations

import json

import pytest

from app.evaluation.qa_metrics import cmrc_em, cmrc_f1, score, squad_em, squad_f1


def test_squad_normalisation_matches_the_official_rules():
    assert squad_em("The Denver Broncos!", "denver broncos") == 1.0
    assert squad_f1("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    assert squad_f1("Carolina", "Denver") == 0.0


def test_cmrc_scoring_segments_chinese_by_character():
    assert cmrc_em("《战国无双3》", "战国无双3") == 1.0
    # Prediction segments: 光 荣 和 ωforce 开 发 ('-' dropped); LCS with 光荣 is 2 -> P=2/6, R=1, F1=0.5.
    assert cmrc_f1("光荣和ω-force开发", "光荣") == pytest.approx(0.5)


def test_score_strips_citations_and_reports_containment():
    s = score("It was Denver Broncos [1][2].", ["Denver Broncos"], "en")
    assert s["contains"] == 1.0 and s["exact_match"] == 0.0 and s["f1"] > 0.5
    z = score("答案是光荣 [1]", ["光荣"], "zh")
    assert z["contains"] == 1.0


def test_eval_qa_runs_the_full_path(tmp_path, settings, embedder, shared_data, small_llm):
    from app.evaluation.qa import evaluate_qa

    squad = json.loads((shared_data / "squad_v1.1_dev" / "dev-v1.1.json").read_text())
    small = {"data": [{"title": a["title"], "paragraphs": a["paragraphs"][:3]} for a in squad["data"][:2]]}
    file = tmp_path / "mini.json"
    file.write_text(json.dumps(small))
    settings.max_answer_tokens = 16
    result = evaluate_qa(file, limit=3, settings=settings, llm=small_llm, embedder=embedder)
    assert result["n"] == 3
    for key in ("exact_match", "f1", "contains", "retrieval_hit_at_k", "mean_cost_usd", "mean_latency_ms"):
        assert key in result and result[key] >= 0
    assert result["retrieval_hit_at_k"] >= 2 / 3  # the gold paragraph is almost always retrieved
    assert result["mean_cost_usd"] > 0


def test_eval_qa_resumes_from_its_records(tmp_path, settings, embedder, shared_data, small_llm):
    """An interrupted run continues: recorded questions are not asked again and the summary covers all."""
    from app.evaluation.qa import evaluate_qa

    squad = json.loads((shared_data / "squad_v1.1_dev" / "dev-v1.1.json").read_text())
    small = {"data": [{"title": squad["data"][0]["title"], "paragraphs": squad["data"][0]["paragraphs"][:2]}]}
    file = tmp_path / "mini.json"
    file.write_text(json.dumps(small))
    settings.max_answer_tokens = 8
    records = tmp_path / "records.jsonl"
    first = evaluate_qa(
        file, limit=2, settings=settings, llm=small_llm, embedder=embedder, records_file=records
    )
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert first["n"] == 2 and len(lines) == 2 and len({r["qid"] for r in lines}) == 2
    assert all(r["model"] == small_llm.info.name and r["prompt_tokens"] > 0 for r in lines)
    build = lines[0]["model_build"]
    assert len(build) >= 16 and all(r["model_build"] == build for r in lines)
    # Pretend the run stopped after the first question: the second is asked again, the first is not.
    records.write_text(json.dumps(lines[0]) + "\n")
    asked: list[str] = []
    again = evaluate_qa(
        file,
        limit=3,
        settings=settings,
        llm=small_llm,
        embedder=embedder,
        records_file=records,
        progress=lambda n, total: asked.append(f"{n}/{total}"),
    )
    assert again["n"] == 3 and asked == ["1/3", "2/3", "3/3"]
    assert len(records.read_text().splitlines()) == 3
    # A records file of another model is refused rather than mixed into this model's figures.
    other = dict(lines[0], model="someone-else")
    records.write_text(json.dumps(other) + "\n")
    with pytest.raises(ValueError, match="someone-else"):
        evaluate_qa(file, limit=1, settings=settings, llm=small_llm, embedder=embedder, records_file=records)
    # So is another build under the same name (the exact split vs a --refit build, another top-k).
    records.write_text(json.dumps(dict(lines[0], model_build="0123456789abcdef top-k 4")) + "\n")
    with pytest.raises(ValueError, match="top-k 4"):
        evaluate_qa(file, limit=1, settings=settings, llm=small_llm, embedder=embedder, records_file=records)
    # Rows written before builds were fingerprinted (name only) still resume.
    legacy = {k: v for k, v in lines[0].items() if k != "model_build"}
    records.write_text(json.dumps(legacy) + "\n")
    assert (
        evaluate_qa(file, limit=1, settings=settings, llm=small_llm, embedder=embedder, records_file=records)[
            "n"
        ]
        == 1
    )
