"""Streaming the answer: pieces passed on as they come, a citation-only start held back."""

from __future__ import annotations

import pytest

from app.ask.generate import StreamingGenerator
from model.base import Generation, ModelError
from tests.app.ask.parts import ScriptedEngine, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def _drain(gen):
    """All yielded pieces and the generator's return value."""
    pieces = []
    while True:
        try:
            pieces.append(next(gen))
        except StopIteration as stop:
            return pieces, stop.value


def test_the_real_model_streams_pieces_then_its_generation(small_llm):
    llm = provider(small_llm)
    generator = StreamingGenerator(llm, max_tokens=8)
    assert llm.calls == 0
    partial: list[str] = []
    pieces, result = _drain(generator.run(MESSAGES, partial))
    assert isinstance(result.generation, Generation) and 1 <= result.generation.stats.completion_tokens <= 8
    assert "".join(pieces) + result.held == "".join(partial)
    assert "".join(partial).strip() == result.generation.text.strip()


def test_a_start_of_only_citations_is_held_until_words_follow(small_llm):
    engine = ScriptedEngine(
        small_llm, "[1] Meals are reimbursed.", pieces=["[1]", " Meals", " are reimbursed."]
    )
    partial: list[str] = []
    pieces, result = _drain(StreamingGenerator(lambda: engine, max_tokens=8).run(MESSAGES, partial))
    assert pieces == ["[1] Meals", " are reimbursed."] and result.held == ""
    assert partial == ["[1]", " Meals", " are reimbursed."]


def test_a_reply_of_only_citations_is_returned_held(small_llm):
    engine = ScriptedEngine(small_llm, "[2][3]", pieces=["[2]", "[3]"])
    pieces, result = _drain(StreamingGenerator(lambda: engine, max_tokens=8).run(MESSAGES, []))
    assert pieces == [] and result.held == "[2][3]" and result.generation.text == "[2][3]"


def test_a_stream_without_a_result_is_a_model_error(small_llm):
    engine = ScriptedEngine(small_llm, "Hello.", stream_result=False)
    partial: list[str] = []
    with pytest.raises(ModelError, match="ended without a result"):
        _drain(StreamingGenerator(lambda: engine, max_tokens=8).run(MESSAGES, partial))
    assert "".join(partial) == "Hello."  # what was said is kept for the log


def test_fits_checks_the_messages_and_the_answer_against_the_window(small_llm):
    assert StreamingGenerator(lambda: small_llm, max_tokens=8).fits(MESSAGES)
    assert not StreamingGenerator(lambda: small_llm, max_tokens=small_llm.info.context_window).fits(MESSAGES)
