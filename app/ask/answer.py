"""What an ask returns: the answer text, the passages it was grounded on, its citations and its cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from app.costs.meter import CostRecord


@dataclass
class Citation:
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
    question: str
    text: str
    status: str  # ok | no_answer | no_documents
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
        data = asdict(self)
        data["answer"] = data.pop("text")
        data["cost"] = self.cost.to_dict()
        return data
