"""Step 5b: each sentence the model left without a (supported) citation cited to the passage that bears it
out; a sentence no passage supports stays uncited."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.attribution import attribute
from model.prompting import CitationCheck

Embed = Callable[[list[str]], np.ndarray]


class QueryEncoder(Protocol):
    """What attribution embeds sentences with: the store's embedding model (or a test's stand-in)."""

    def encode_query(self, text: str, *, threads: int | None = 1) -> np.ndarray:
        """One text as a query vector, on at most `threads` threads."""


def query_embedding(encoder: Callable[[], QueryEncoder], threads: int) -> Embed:
    """Attribution's embedder: the store's model, which embedded the query, at the query thread count
    (`encoder` is a provider, so the model loads only when attribution needs it)."""

    def embed(texts: list[str]) -> np.ndarray:
        model = encoder()
        return np.stack([model.encode_query(t, threads=threads) for t in texts])

    return embed


@dataclass(frozen=True)
class Attributed:
    """The answer after attribution, and the passages only attribution cited (shown as sparq's citations)."""

    checked: CitationCheck  # the text with the new citations, cited = the model's then attribution's
    attributed: list[int]  # the passages only attribution cited


class Attributor:
    """Cites each uncited sentence to the passage that bears it out, keeping the model's own citations."""

    def __init__(self, embed: Embed) -> None:
        self._embed = embed

    def run(self, checked: CitationCheck, evidence: Sequence[str], *, question: str) -> Attributed:
        """`checked` with attribution's citations added; a sentence no passage supports stays uncited."""
        found = attribute(checked.text, evidence, question=question, embed=self._embed)
        attributed = [n for n in found.attributed if n not in checked.cited]
        return Attributed(
            CitationCheck(found.text, [*checked.cited, *attributed], checked.removed, checked.unsupported),
            attributed,
        )
