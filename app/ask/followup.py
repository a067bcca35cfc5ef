"""Step 1: a follow-up ("and for contractors?") rewritten as a standalone question, so retrieval can find it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.base import Generation, LLMEngine
from model.prompting import rewrite_messages


@dataclass(frozen=True)
class Rewrite:
    """The standalone question (the original one when the model gave nothing) and the generation it cost."""

    question: str
    generation: Generation


class FollowUpRewriter:
    """Asks the answer model, once and deterministically, for the conversation's question in one line."""

    def __init__(self, llm: Callable[[], LLMEngine], *, max_tokens: int = 64) -> None:
        if max_tokens < 1:
            raise ValueError(f"a rewrite needs at least one token, got max_tokens={max_tokens}")
        self._llm = llm  # a provider: the model loads on the first question that needs it
        self.max_tokens = max_tokens

    def run(self, history: Sequence[dict[str, str]], question: str) -> Rewrite:
        """The standalone question for `question` after `history` (itself when the model gives nothing)."""
        generation = self._llm().generate(
            rewrite_messages(history, question), max_tokens=self.max_tokens, temperature=0.0
        )
        text = generation.text.strip()
        rewritten = text.strip('"').splitlines()[0].strip() if text else ""
        return Rewrite(rewritten or question, generation)
