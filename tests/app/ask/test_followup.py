"""Rewriting a follow-up as a standalone question, with the small real model."""

from __future__ import annotations

import pytest

from app.ask.followup import FollowUpRewriter
from tests.app.ask.parts import ScriptedEngine, provider

HISTORY = [
    {"role": "user", "content": "How much are meals reimbursed per day?"},
    {"role": "assistant", "content": "Meals are reimbursed up to 40 euros per day [1]."},
]


def test_the_model_rewrites_a_follow_up_in_one_line(small_llm):
    llm = provider(small_llm)
    rewriter = FollowUpRewriter(llm)
    assert llm.calls == 0  # built without loading the model
    rewrite = rewriter.run(HISTORY, "And for hotels?")
    assert llm.calls == 1
    assert rewrite.question.strip() and "\n" not in rewrite.question
    assert 1 <= rewrite.generation.stats.completion_tokens <= 64
    assert rewrite.generation.stats.prompt_tokens > 0


@pytest.mark.parametrize(
    "reply",
    [
        '"How much are hotels reimbursed per night?"',
        "How much are hotels reimbursed per night?\nThat is all.",
    ],
)
def test_the_first_line_without_quotes_is_the_question(small_llm, reply):
    scripted = ScriptedEngine(small_llm, reply)
    rewrite = FollowUpRewriter(lambda: scripted).run(HISTORY, "And for hotels?")
    assert rewrite.question == "How much are hotels reimbursed per night?"
    assert "And for hotels?" in scripted.calls[0][-1]["content"]


def test_an_empty_rewrite_keeps_the_question(small_llm):
    scripted = ScriptedEngine(small_llm, "   ")
    assert FollowUpRewriter(lambda: scripted).run(HISTORY, "And for hotels?").question == "And for hotels?"


def test_a_rewrite_without_tokens_is_refused_when_built():
    with pytest.raises(ValueError, match="max_tokens=0"):
        FollowUpRewriter(lambda: None, max_tokens=0)
