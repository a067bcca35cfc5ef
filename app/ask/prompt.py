"""Step 3: the grounded prompt, packed with as many passages (in rank order) as the model's window holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app.ask.labels import location_of, source_label
from model.base import LLMEngine
from model.prompting import PackedPrompt, pack_prompt


class PromptPacker:
    """Packs passages under the window minus the answer's tokens; raises ContextTooLong (from the engine) or
    PromptTooLong when even the question and instructions do not fit."""

    def __init__(self, llm: Callable[[], LLMEngine], *, max_answer_tokens: int) -> None:
        self._llm = llm
        self.max_answer_tokens = max_answer_tokens

    def run(self, question: str, hits: Sequence[Any], language: str) -> PackedPrompt:
        """The prompt for `question` with as many of `hits` as fit, checked against the engine's window."""
        llm = self._llm()
        packed = pack_prompt(
            question,
            [(h.text, source_label(h), h) for h in hits],
            count_chat_tokens=llm.count_chat_tokens,
            count_tokens=llm.count_tokens,
            context_window=llm.info.context_window,
            max_answer_tokens=self.max_answer_tokens,
            language=language,
        )
        llm.check_fits(packed.prompt_tokens, self.max_answer_tokens)
        return packed


def evidence_of(packed: PackedPrompt) -> list[str]:
    """Each passage as the model saw it (its source line and text): what its citations are checked against."""
    return [f"{p.source}\n{p.text}" for p in packed.passages]


def passage_records(packed: PackedPrompt) -> list[dict[str, Any]]:
    """The passages given to the model, as the answer reports them."""
    records = []
    for p in packed.passages:
        hit: Any = p.key  # the search hit the passage was packed from
        records.append(
            {
                "ref": p.ref,
                "chunk_id": hit.chunk_id,
                "document_id": hit.document_id,
                "path": hit.path,
                "title": hit.title,
                "location": location_of(hit),
                "text": p.text,
                "score": float(hit.score_fused),
            }
        )
    return records
