"""Step 4: the answer generated, streamed as it comes, with a reply that is only citations so far held back."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from model.base import ContextTooLong, Generation, LLMEngine, ModelError
from model.prompting import is_citations_only


@dataclass(frozen=True)
class Generated:
    """The answer's generation, and any text held back because it was only citations so far."""

    generation: Generation
    held: str  # text still held back: non-empty only for a reply that is citations only ("[2][3]")


class StreamingGenerator:
    """Streams one deterministic generation. Pieces that are only citations so far are held back (they may be
    all there is, and then the words are asked for); the rest are passed on as they come."""

    def __init__(self, llm: Callable[[], LLMEngine], *, max_tokens: int, temperature: float = 0.0) -> None:
        self._llm = llm
        self.max_tokens = max_tokens
        self.temperature = temperature

    def fits(self, messages: list[dict[str, str]]) -> bool:
        """Whether `messages` and an answer of `max_tokens` fit the model's window."""
        llm = self._llm()
        try:
            llm.check_fits(llm.count_chat_tokens(messages), self.max_tokens)
        except ContextTooLong:
            return False
        return True

    def run(self, messages: list[dict[str, str]], partial: list[str]) -> Generator[str, None, Generated]:
        """Yields the text as it may be shown and returns the Generation; every piece is also appended to
        `partial`, so a failure mid-stream can still log what the model had said."""
        generation: Generation | None = None
        held: list[str] = []
        released = False
        for item in self._llm().stream(messages, max_tokens=self.max_tokens, temperature=self.temperature):
            if isinstance(item, Generation):
                generation = item
                continue
            partial.append(item)
            if released:
                yield item
                continue
            held.append(item)
            if not is_citations_only("".join(held)):
                yield "".join(held)
                held.clear()
                released = True
        if generation is None:
            raise ModelError("the model stream ended without a result")
        return Generated(generation, "".join(held))
