"""Prompt packing and citation checking with a real tokenizer (the embedding model's), no model needed."""

from __future__ import annotations

import pytest

from model.prompting import (
    NOT_FOUND,
    Passage,
    PromptTooLong,
    answer_in_words_messages,
    check_citations,
    grounded_messages,
    is_citations_only,
    is_not_found,
    language_of,
    pack_prompt,
)


@pytest.fixture(scope="module")
def counters(embedder):
    def count(text: str) -> int:
        return embedder.count_tokens([text])[0]

    def count_chat(messages) -> int:
        return sum(count(m["content"]) + 4 for m in messages) + 2

    return count, count_chat


def test_pack_never_exceeds_the_window_and_keeps_rank_order(counters):
    count, count_chat = counters
    candidates = [(f"Passage {i}. " + "The quarterly revenue grew strongly. " * 20, f"doc{i}.pdf, page {i}", i)
                  for i in range(30)]
    packed = pack_prompt("What happened to revenue?", candidates, count_chat_tokens=count_chat,
                         count_tokens=count, context_window=1024, max_answer_tokens=200)
    assert packed.prompt_tokens == count_chat(packed.messages)
    assert packed.prompt_tokens <= 1024 - 200
    assert 1 <= len(packed.passages) < 30
    assert [p.key for p in packed.passages] == list(range(len(packed.passages)))
    assert [p.ref for p in packed.passages] == list(range(1, len(packed.passages) + 1))
    body = packed.messages[1]["content"]
    assert "[1] (doc0.pdf, page 0)" in body and body.rstrip().endswith("What happened to revenue?")
    assert packed.dropped + len(packed.passages) == 30


def test_question_too_long_for_the_window_is_refused(counters):
    count, count_chat = counters
    with pytest.raises(PromptTooLong):
        pack_prompt("why " * 2000, [("x", "s", 1)], count_chat_tokens=count_chat, count_tokens=count,
                    context_window=512, max_answer_tokens=100)


def test_citations_to_nothing_are_removed():
    checked = check_citations("Meals are paid [1][7]. VPN rotates [2, 9]. Nothing [0].", n_passages=3)
    assert checked.text == "Meals are paid [1]. VPN rotates [2]. Nothing."
    assert checked.cited == [1, 2]
    assert checked.removed == [7, 9, 0]


def test_language_and_not_found_detection():
    assert language_of("公司的差旅政策是什么？") == "zh"
    assert language_of("What is the travel policy?") == "en"
    assert is_not_found(NOT_FOUND["en"]) and is_not_found(NOT_FOUND["zh"])
    assert not is_not_found("Meals are reimbursed up to 40 euros [1].")


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("[1] [2][3]", True),
        ("[1, 2].", True),
        ("[2]。", True),
        ("[1", True),  # a prefix still streaming
        ("[2] [", True),
        ("Denver Broncos [1]", False),
        ("[1] The meal allowance is 40 euros.", False),
        ("40 [1]", False),
    ],
)
def test_citation_only_replies_are_recognised(text, bare):
    assert is_citations_only(text) is bare


def test_answer_in_words_turn_shows_the_bare_reply_back():
    messages = grounded_messages("When?", [Passage(1, "Monday.", "a.md")], "zh")
    retry = answer_in_words_messages(messages, " [1] ", "zh")
    assert retry[:2] == messages
    assert retry[2] == {"role": "assistant", "content": "[1]"}
    assert retry[3]["role"] == "user" and "段落编号" in retry[3]["content"]
