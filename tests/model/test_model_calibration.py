"""The bundled calibration text: shipped, licensed, both languages, the ask path's prompt, disjoint from the benches."""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import islice

import pytest

from model.base import ModelError
from model.moe.calibration import (
    BUNDLED_PER_PROMPT,
    BUNDLED_TEXT,
    bundled_calibration_samples,
    read_calibration_passages,
)
from model.prompting import NOT_FOUND, system_prompt


def test_the_bundled_text_ships_with_its_licence_in_english_and_chinese():
    header = BUNDLED_TEXT.read_text(encoding="utf-8")[:1500]
    assert "CC0" in header and "Original text written for sparq" in header
    passages = read_calibration_passages()
    languages = Counter(p.language for p in passages)
    assert languages["en"] >= 40 and languages["zh"] >= 30, languages
    assert BUNDLED_TEXT.stat().st_size > 30_000
    assert len({p.text for p in passages}) == len(passages), "a passage is repeated"
    for p in passages:
        assert p.answer, p.question
        assert p.language == ("zh" if re.search(r"[\u4e00-\u9fff]", p.question) else "en"), p.question


def test_bundled_chats_are_the_ask_paths_prompt_with_a_cited_answer_or_a_refusal():
    passages = read_calibration_passages()
    by_question = {p.question: p for p in passages}
    chats = list(islice(bundled_calibration_samples(), 200))
    refusals = 0
    for system, user, assistant in (tuple(m["content"] for m in chat) for chat in chats):
        language = "zh" if system == system_prompt("zh") else "en"
        assert system == system_prompt(language)
        refs = re.findall(r"^\[(\d+)\] \(", user, flags=re.M)
        assert refs == [str(i + 1) for i in range(BUNDLED_PER_PROMPT)], user[:200]
        question = user.rsplit("问题：" if language == "zh" else "Question:", 1)[1].strip()
        asked = by_question[question]
        assert asked.language == language
        shown = sorted((p for p in passages if p.text in user), key=lambda p: user.index(p.text))
        assert len(shown) == BUNDLED_PER_PROMPT and {p.language for p in shown} == {language}
        if assistant == NOT_FOUND[language]:
            refusals += 1
            assert asked not in shown  # refused only when the passage is really absent
        else:
            cited = int(re.fullmatch(r".+ \[(\d)\]", assistant).group(1))
            assert shown[cited - 1] is asked, (question, assistant)
            assert assistant.startswith(asked.answer)
    assert 10 <= refusals <= 40


def test_any_budget_covers_both_languages_and_every_passage_is_shown():
    passages = read_calibration_passages()
    first = [chat[0]["content"] == system_prompt("zh") for chat in islice(bundled_calibration_samples(), 8)]
    assert 2 <= sum(first) <= 6, first  # Chinese and English alternate from the start
    seen = "".join(chat[1]["content"] for chat in islice(bundled_calibration_samples(), 40))
    assert all(p.text in seen for p in passages)


def test_bundled_chats_are_the_same_on_every_call():
    a = list(islice(bundled_calibration_samples(), 50))
    assert a == list(islice(bundled_calibration_samples(), 50))


def test_a_malformed_block_fails_with_its_number(tmp_path):
    bad = tmp_path / "calibration.txt"
    bad.write_text("# comment\nS: a\nC: text\nQ: q?\nA: a\n\nS: b\nC: text two\nQ: q2?\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"block 2 lacks \['A'\]"):
        read_calibration_passages(bad)
    bad.write_text("S: a\nC: text\nnot a field\nQ: q?\nA: a\n", encoding="utf-8")
    with pytest.raises(ModelError, match="block 1 has a malformed line"):
        read_calibration_passages(bad)
    bad.write_text("# only comments\n", encoding="utf-8")
    with pytest.raises(ModelError, match="empty"):
        read_calibration_passages(bad)


def _shingles(text: str, n: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_no_benchmark_text_is_in_the_bundled_calibration(shared_data):
    """The benches measure questions the build never saw: no 8-word run of SQuAD dev, no 12-character run of
    CMRC 2018 dev, and none of their questions, is in the bundled text."""
    passages = read_calibration_passages()
    squad = json.loads((shared_data / "squad_v1.1_dev" / "dev-v1.1.json").read_text(encoding="utf-8"))
    squad_text = " ".join(
        p["context"] + " " + " ".join(q["question"] for q in p["qas"])
        for a in squad["data"]
        for p in a["paragraphs"]
    )
    ours_en = set().union(*(_shingles(p.text + " " + p.question, 8) for p in passages if p.language == "en"))
    assert not ours_en & _shingles(squad_text, 8)
    cmrc = json.loads((shared_data / "cmrc2018_dev" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    cmrc_text = "".join(
        p["context"] + "".join(q["question"] for q in p["qas"]) for a in cmrc["data"] for p in a["paragraphs"]
    )
    for p in passages:
        if p.language == "zh":
            body = re.sub(r"\s", "", p.text + p.question)
            assert not any(body[i : i + 12] in cmrc_text for i in range(len(body) - 11)), p.source


def test_the_fingerprint_follows_the_passages_not_the_comments(tmp_path, monkeypatch):
    import model.moe.calibration as calibration

    monkeypatch.delenv("SPARQ_SQUAD_PATH", raising=False)
    text = tmp_path / "calibration.txt"
    monkeypatch.setattr(calibration, "BUNDLED_TEXT", text)
    text.write_text(
        "# v1\nS: a\nC: The pump runs at 16 bar.\nQ: At what pressure?\nA: 16 bar\n", encoding="utf-8"
    )
    first = calibration.default_calibration_id()
    text.write_text(
        "# v2, reworded\nS: a\nC: The pump runs at 16 bar.\nQ: At what pressure?\nA: 16 bar\n", "utf-8"
    )
    assert calibration.default_calibration_id() == first  # an edited comment reuses the build
    text.write_text("# v2\nS: a\nC: The pump runs at 12 bar.\nQ: At what pressure?\nA: 12 bar\n", "utf-8")
    assert calibration.default_calibration_id() != first  # changed passages rebuild it


def test_a_squad_setting_naming_no_file_is_an_error_not_the_bundled_text(tmp_path, monkeypatch):
    import model.moe.calibration as calibration

    monkeypatch.setenv("SPARQ_SQUAD_PATH", str(tmp_path / "moved-away" / "dev-v1.1.json"))
    with pytest.raises(ModelError, match="SPARQ_SQUAD_PATH names .*not a file"):
        calibration.default_calibration_id()
    with pytest.raises(ModelError, match="not a file"):
        next(iter(calibration.default_calibration_samples()))
    monkeypatch.setenv("SPARQ_SQUAD_PATH", "  ")  # blank counts as unset: the bundled text
    assert calibration.default_calibration_id().startswith("bundled:")
