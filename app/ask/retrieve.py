"""Step 2: the passages the asker may read that best match the (standalone) question, and how long that took."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from retrieval.access import Principal
from retrieval.filters import SearchFilters


class Searcher(Protocol):
    """Access-checked search (Assistant.search): the `k` best passages `user` may read."""

    def __call__(self, query: str, *, user: Principal, k: int, filters: SearchFilters | None) -> list[Any]:
        """Search as `user`: only what they may read comes back, best first."""


class EmbedTimer:
    """Each thread's latest query-embedding time: the searcher embeds inside its own call, and ask reports
    the embed stage apart from the search around it."""

    def __init__(self) -> None:
        self._local = threading.local()

    def timed(self, encode: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
        """`encode`, recording its duration for the calling thread (also when it fails)."""
        local = self._local

        def timed_encode(query: str) -> np.ndarray:
            started = time.perf_counter()
            try:
                return encode(query)
            finally:
                local.embed_ms = (time.perf_counter() - started) * 1000

        return timed_encode

    def reset(self) -> None:
        """Forget this thread's last embedding time, so a search that did not embed reports none."""
        self._local.embed_ms = None

    def last_ms(self) -> float | None:
        """How long this thread's latest embedding took (None if none since the last reset)."""
        return getattr(self._local, "embed_ms", None)


@dataclass(frozen=True)
class Retrieval:
    """The passages found for an ask, and how long finding them took."""

    hits: list[Any]  # retrieval.search.Hit, best first
    timings_ms: dict[str, float]  # retrieve; embed and search when the searcher embedded the query


class Retriever:
    """Searches as the asker (access is enforced by the searcher), within the chosen collections."""

    def __init__(self, search: Searcher, *, passages: int, embed_timer: EmbedTimer | None = None) -> None:
        if passages < 1:
            raise ValueError(f"an ask needs at least one passage, got passages={passages}")
        self._search = search
        self.passages = passages
        self._embed_timer = embed_timer

    def run(self, query: str, principal: Principal, collections: Sequence[str] | None) -> Retrieval:
        """The passages `principal` may read for `query` (within `collections`), and the time each part took."""
        filters = SearchFilters(collections=tuple(collections)) if collections else None
        timer = self._embed_timer
        if timer is not None:
            timer.reset()
        started = time.perf_counter()
        hits = self._search(query, user=principal, k=self.passages, filters=filters)
        timings = {"retrieve": (time.perf_counter() - started) * 1000}
        embed_ms = timer.last_ms() if timer is not None else None
        if embed_ms is not None:
            # The keyword half runs while the query embeds, so "search" is what retrieval added on top.
            timings["embed"] = embed_ms
            timings["search"] = max(0.0, timings["retrieve"] - embed_ms)
        return Retrieval(list(hits), timings)
