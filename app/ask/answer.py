"""What an ask returns: the answer text, the passages it was grounded on, its citations and its cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from app.costs.meter import CostRecord

# How an ask ended with an answer (a refused or failed ask raises instead).
AnswerStatus = Literal["ok", "no_answer", "no_documents"]


@dataclass
class Citation:
    """A passage the answer cites, named and located so the reader can open it and check the claim."""

    ref: int
    document_id: int
    title: str | None
    path: str
    location: str
    snippet: str
    score: float
    chunk_id: int
    attributed: bool = (
        False  # cited by sparq's attribution (the passage bears the sentence out), not the model
    )


@dataclass
class Answer:
    """What an ask returns: the text, how it ended, what it was grounded on and cites, and what it cost."""

    question: str
    text: str
    status: AnswerStatus
    citations: list[Citation]
    passages: list[dict[str, Any]]
    timings_ms: dict[str, float]
    prompt_tokens: int
    completion_tokens: int
    cost: CostRecord
    rewritten_question: str | None = None
    language: str = "en"
    query_id: int | None = None
    model: str | None = None
    removed_citations: list[int] = field(default_factory=list)
    unsupported_citations: list[int] = field(default_factory=list)  # cited passages that lack the claim

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data (the text as `answer`, the cost as its figures), as the CLI prints it."""
        data = asdict(self)
        data["answer"] = data.pop("text")
        data["cost"] = self.cost.to_dict()
        return data
