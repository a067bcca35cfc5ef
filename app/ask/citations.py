"""Step 5: every citation checked against the passage it names, and the cited passages as Citations.

A citation to no passage, or to a passage that does not bear its sentence out, is removed (never re-pointed).
A reply that is only citations ("[2][3]") names sources but answers nothing: the pipeline asks once more for
the words and `merge_retry` keeps what the two replies together support."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.ask.answer import Citation
from app.ask.labels import location_of, snippet
from model.prompting import (
    NOT_FOUND,
    CitationCheck,
    PackedPrompt,
    check_citations,
    is_citations_only,
    is_not_found,
    supports_answer,
)


def check(text: str, evidence: Sequence[str]) -> CitationCheck:
    """`text` with citations to nothing, and unsupported citations, removed."""
    return check_citations(text, passages=evidence)


def is_bare(checked: CitationCheck) -> bool:
    """A reply that cites sources and says nothing else: the words must be asked for."""
    return bool(checked.cited) and is_citations_only(checked.text)


def merge_retry(first: CitationCheck, retry_text: str, evidence: Sequence[str]) -> CitationCheck:
    """The retry's text checked, carrying the bare reply's removals; when the retry cites nothing, the bare
    reply's sources that its words bear out are kept."""
    checked = check(retry_text, evidence)
    checked.removed[:0] = first.removed
    checked.unsupported[:0] = first.unsupported
    if not checked.cited and not is_not_found(checked.text):
        checked.cited.extend(n for n in first.cited if supports_answer(checked.text, evidence[n - 1]))
    return checked


def wants_attribution(checked: CitationCheck) -> bool:
    """Whether the text says something that a passage could bear out (not empty, not "not found")."""
    text = checked.text
    return bool(text.strip()) and not is_not_found(text) and not is_citations_only(text)


@dataclass(frozen=True)
class Resolved:
    """How the answer ends (`ok`, or `no_answer`: the documents do not hold it) and what it cites."""

    status: Literal["ok", "no_answer"]
    text: str
    citations: list[Citation]


def resolve(
    checked: CitationCheck, packed: PackedPrompt, attributed: Sequence[int], language: str
) -> Resolved:
    """The answer's status and text, and a Citation for each cited passage (in order of first citation)."""
    if is_not_found(checked.text) or not checked.text.strip():
        return Resolved("no_answer", checked.text.strip() or NOT_FOUND[language], [])
    by_ref: dict[int, Any] = {p.ref: p.key for p in packed.passages}
    citations = []
    for ref in checked.cited:
        hit = by_ref[ref]
        citations.append(
            Citation(
                ref,
                hit.document_id,
                hit.title,
                hit.path,
                location_of(hit),
                snippet(hit.text),
                float(hit.score_fused),
                hit.chunk_id,
                attributed=ref in attributed,
            )
        )
    return Resolved("ok", checked.text, citations)
