"""The question step: what may be asked, and the errors for what may not."""

from __future__ import annotations

import pytest

from app.ask.question import MAX_QUESTION_CHARS, AskError, validate_question


def test_a_question_is_stripped():
    assert validate_question("  When do passwords expire?\n") == "When do passwords expire?"


@pytest.mark.parametrize("blank", [None, "", "   \n\t"])
def test_an_empty_question_is_refused(blank):
    with pytest.raises(AskError, match="the question is empty"):
        validate_question(blank)


def test_a_long_question_is_refused_with_its_length_and_the_limit():
    validate_question("x" * MAX_QUESTION_CHARS)  # at the limit: fine
    with pytest.raises(AskError, match=r"is 4,001 characters long; the limit is 4,000"):
        validate_question("x" * (MAX_QUESTION_CHARS + 1))


def test_ask_error_is_a_value_error():
    # The API maps ValueErrors from the ask to 400s; AskError must stay one.
    assert issubclass(AskError, ValueError)
