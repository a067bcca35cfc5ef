"""The question as asked: what a question may be, and the error for one that cannot be asked."""

from __future__ import annotations

MAX_QUESTION_CHARS = 4000


class AskError(ValueError):
    """A question that cannot be asked as given; the message says why."""


def validate_question(question: str | None) -> str:
    """The question stripped, or AskError when it is empty or longer than `MAX_QUESTION_CHARS`."""
    if question is None or not str(question).strip():
        raise AskError("the question is empty")
    text = str(question).strip()
    if len(text) > MAX_QUESTION_CHARS:
        raise AskError(
            f"the question is {len(text):,} characters long; the limit is {MAX_QUESTION_CHARS:,}. "
            "Ask about one thing at a time, or ingest long material as a document."
        )
    return text
