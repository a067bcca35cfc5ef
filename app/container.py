"""What an Assistant builds once for asking: the ask's steps, each wired to the collaborators it needs.

The collaborators come in as providers (callables) so nothing loads before it is used: the answer model on
the first question that needs it, the database when an ask is logged. A setting changed on a live
Assistant still takes effect at the next ask: the steps are rebuilt when the ask's settings differ from
those they were built with."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.ask.retrieve import EmbedTimer, Searcher
from app.costs.meter import CostModel
from retrieval.access import Principal

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.ask.attribute import QueryEncoder
    from app.ask.pipeline import AskPipeline
    from app.config import Settings
    from app.costs.budgets import Budgets
    from model.base import LLMEngine


@dataclass(frozen=True)
class AskConfig:
    """The settings an ask reads, as values."""

    max_answer_tokens: int
    ask_passages: int
    query_threads: int
    cpu_watts: float
    gpu_watts: float
    gpu: bool
    cost_model: CostModel

    @classmethod
    def from_settings(cls, s: Settings) -> AskConfig:
        """The ask's settings read now, so a changed setting is seen by comparing two of these."""
        return cls(
            max_answer_tokens=s.max_answer_tokens,
            ask_passages=s.ask_passages,
            query_threads=s.query_threads,
            cpu_watts=s.cpu_watts,
            gpu_watts=s.gpu_watts,
            gpu=s.gpu,
            cost_model=CostModel(
                pue=s.pue,
                electricity_usd_per_kwh=s.electricity_usd_per_kwh,
                hardware_usd=s.hardware_usd,
                hardware_lifetime_years=s.hardware_lifetime_years,
                hardware_utilisation=s.hardware_utilisation,
                cloud_prices={k: (float(v[0]), float(v[1])) for k, v in s.cloud_prices.items()},
            ),
        )


class AskContainer:
    """Holds the ask's parts for one Assistant; `pipeline()` is what `Assistant.ask` runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        search: Searcher,
        principal: Callable[[str | Principal | None], Principal],
        budgets: Callable[[], Budgets],
        llm: Callable[[], LLMEngine],
        loaded_llm: Callable[[], LLMEngine | None],
        encoder: Callable[[], QueryEncoder],
        database: Callable[[], Engine],
    ) -> None:
        self._settings = settings
        self._search = search
        self._principal = principal
        self._budgets = budgets
        self._llm = llm
        self._loaded_llm = loaded_llm
        self._encoder = encoder
        self._database = database
        # Shared with the searcher's query encoder, which records how long each thread's embedding took.
        self.embed_timer = EmbedTimer()
        self._lock = threading.Lock()
        self._built: tuple[AskConfig, AskPipeline] | None = None

    def pipeline(self) -> AskPipeline:
        """The ask's steps, rebuilt only when the ask's settings changed since they were built."""
        config = AskConfig.from_settings(self._settings)
        with self._lock:
            if self._built is None or self._built[0] != config:
                self._built = (config, self._build(config))
            return self._built[1]

    def _build(self, config: AskConfig) -> AskPipeline:
        from app.ask.attribute import Attributor, query_embedding
        from app.ask.followup import FollowUpRewriter
        from app.ask.generate import StreamingGenerator
        from app.ask.log import QueryLogWriter
        from app.ask.metering import CostMeter
        from app.ask.pipeline import AskPipeline
        from app.ask.prompt import PromptPacker
        from app.ask.retrieve import Retriever

        return AskPipeline(
            principal=self._principal,
            check_budget=lambda principal: self._budgets().check(principal),
            rewriter=FollowUpRewriter(self._llm),
            retriever=Retriever(self._search, passages=config.ask_passages, embed_timer=self.embed_timer),
            packer=PromptPacker(self._llm, max_answer_tokens=config.max_answer_tokens),
            generator=StreamingGenerator(self._llm, max_tokens=config.max_answer_tokens),
            attributor=Attributor(query_embedding(self._encoder, config.query_threads)),
            meter=CostMeter(
                config.cost_model,
                cpu_watts=config.cpu_watts,
                gpu_watts=config.gpu_watts,
                gpu=config.gpu,
                loaded_llm=self._loaded_llm,
            ),
            query_log=QueryLogWriter(self._database, self._loaded_llm),
            loaded_llm=self._loaded_llm,
        )
