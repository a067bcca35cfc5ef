"""Step 7: the ask's query_log row, written whatever happened (answered, declined, rejected, failed), so
cost reports and audits never miss a query."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import Engine

from app.ask.answer import Citation
from app.costs import ledger
from app.costs.meter import CostRecord
from model.base import Generation, LLMEngine


@dataclass
class AskRecord:
    """Who asked what and how it ended, filled in as the ask goes (status "error" until it says otherwise)."""

    question: str
    collections: list[str]
    status: str = "error"
    user_name: str | None = None
    rewritten_question: str | None = None
    answer: str | None = None
    error: str | None = None

    def end(self, status: str, error: str, answer: str | None = None) -> None:
        """Record how an ask that raised ended, and the text produced before it did."""
        self.status, self.error, self.answer = status, error, answer


def summed_histogram(gens: Iterable[Generation]) -> list[list[int]] | None:
    """The query's expert usage: every generation's per-layer counts added up (same model, same shape)."""
    total: list[list[int]] | None = None
    for g in gens:
        h = g.stats.expert_histogram
        if not h:
            continue
        total = (
            [list(row) for row in h]
            if total is None
            else [[a + b for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(total, h, strict=True)]
        )
    return total


class QueryLogWriter:
    """Writes one ledger row per ask, naming the model that was loaded (never loading one)."""

    def __init__(self, engine: Callable[[], Engine], loaded_llm: Callable[[], LLMEngine | None]) -> None:
        self._engine = engine  # providers: the database opens, and a model is named, only when an ask ends
        self._loaded_llm = loaded_llm

    def write(
        self,
        record: AskRecord,
        *,
        cost: CostRecord,
        timings_ms: Mapping[str, float],
        citations: Sequence[Citation],
        gens: Mapping[str, Generation],
    ) -> int:
        """Write the ledger row for one ask and return its id (the query id feedback and the API refer to)."""
        llm = self._loaded_llm()
        row = ledger.entry(
            cost,
            user_name=record.user_name,
            collections=record.collections,
            question=record.question,
            rewritten_question=record.rewritten_question,
            answer=record.answer,
            status=record.status,
            error=record.error,
            model=llm.info.name if llm is not None else None,
            backend=llm.info.backend if llm is not None else None,
            timings_ms=timings_ms,
            details={
                "citations": [asdict(c) for c in citations],
                "expert_histogram": summed_histogram(gens.values()),
            },
        )
        return ledger.write(self._engine(), row)
