"""The main path: a question in, a grounded and cited answer out, with what it cost logged in SQL.

Every ask writes one `query_log` row whatever happens (answered, declined, rejected input, model failure),
so cost reports and audits never miss a query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.costs import ledger
from app.costs.budgets import OverBudget
from app.costs.meter import CostModel, CostRecord, EnergyMeter
from model.attribution import attribute
from model.base import ContextTooLong, Generation, GenerationStats, ModelError
from model.prompting import (
    NOT_FOUND,
    CitationCheck,
    PromptTooLong,
    answer_in_words_messages,
    check_citations,
    is_citations_only,
    is_not_found,
    language_of,
    pack_prompt,
    rewrite_messages,
    supports_answer,
)
from retrieval.access import Principal

if TYPE_CHECKING:
    from app.assistant import Assistant

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
NO_DOCUMENTS = {
    "en": "None of the documents you can access match this question, so I cannot answer it.",
    "zh": "您可访问的文档中没有与此问题相关的内容，因此无法回答。",
}


class AskError(ValueError):
    """A question that cannot be asked as given; the message says why."""


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
    attributed: bool = False  # cited by sparq's attribution (the passage bears the sentence out), not the model


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


def location_of(hit: Any) -> str:
    parts = []
    if getattr(hit, "page", None):
        parts.append(f"page {hit.page}")
    ocr_confidence = getattr(hit, "ocr_confidence", None)
    if ocr_confidence is not None:  # a scan: the reader should know the text was machine-read
        parts.append(f"OCR, confidence {ocr_confidence:.0f}%")
    if getattr(hit, "slide", None):
        parts.append(f"slide {hit.slide}")
    if getattr(hit, "sheet", None):
        parts.append(f"sheet {hit.sheet}")
    if getattr(hit, "heading_path", None):
        parts.append(hit.heading_path)
    return ", ".join(parts)


def source_label(hit: Any) -> str:
    """How a passage names its origin in the prompt and citations: title (or file name), then location."""
    name = hit.title or hit.path.rsplit("/", 1)[-1]
    loc = location_of(hit)
    return f"{name}, {loc}" if loc else name


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _merge_stats(parts: Sequence[GenerationStats]) -> dict[str, float]:
    return {
        "prompt_tokens": sum(p.prompt_tokens for p in parts),
        "completion_tokens": sum(p.completion_tokens for p in parts),
        "flops": sum(p.flops_prefill + p.flops_decode for p in parts),
        "dense_flops": sum(p.dense_flops_prefill + p.dense_flops_decode for p in parts),
    }


def _summed_histogram(gens: Iterable[Generation]) -> list[list[int]] | None:
    """The query's expert usage: every generation's per-layer counts added up (same model, same shape)."""
    total: list[list[int]] | None = None
    for g in gens:
        h = g.stats.expert_histogram
        if not h:
            continue
        total = [list(row) for row in h] if total is None else [
            [a + b for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(total, h, strict=True)
        ]
    return total


class AskService:
    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        s = assistant.settings
        self.cost_model = CostModel(
            pue=s.pue,
            electricity_usd_per_kwh=s.electricity_usd_per_kwh,
            hardware_usd=s.hardware_usd,
            hardware_lifetime_years=s.hardware_lifetime_years,
            hardware_utilisation=s.hardware_utilisation,
            cloud_prices={k: (float(v[0]), float(v[1])) for k, v in s.cloud_prices.items()},
        )

    def run(
        self,
        question: str,
        *,
        user: str | Principal | None,
        collections: Sequence[str] | None,
        history: Sequence[dict[str, str]] | None,
    ) -> Iterator[str | Answer]:
        """Yields answer text pieces as the model produces them, then the final Answer."""
        settings = self.assistant.settings
        started = time.perf_counter()
        meter = EnergyMeter(settings.cpu_watts, settings.gpu_watts, settings.gpu).start()
        timings: dict[str, float] = {}
        gens: dict[str, Generation] = {}  # by role: rewrite, answer, retry (in the order they ran)
        row: dict[str, Any] = {
            "question": (question or "")[:MAX_QUESTION_CHARS],
            "collections": list(collections or []),
            "status": "error",
        }
        principal: Principal | None = None
        partial: list[str] = []
        answer: Answer | None = None
        try:
            text = self._validate(question)
            principal = self.assistant.principal(user)
            row["user_name"] = principal.name
            self.assistant.budgets.check(principal)  # before any model call: a spent budget costs nothing
            language = language_of(text)
            standalone = text
            if history:
                t = time.perf_counter()
                standalone, rewrite = self._rewrite(history, text)
                timings["rewrite"] = (time.perf_counter() - t) * 1000
                gens["rewrite"] = rewrite
                row["rewritten_question"] = standalone

            self.assistant.last_embed_ms(reset=True)
            t = time.perf_counter()
            hits = self._retrieve(standalone, principal, collections)
            timings["retrieve"] = (time.perf_counter() - t) * 1000
            embed_ms = self.assistant.last_embed_ms()
            if embed_ms is not None:
                # The keyword half runs while the query embeds, so "search" is what retrieval added on top.
                timings["embed"] = embed_ms
                timings["search"] = max(0.0, timings["retrieve"] - embed_ms)

            if not hits:
                answer_text = NO_DOCUMENTS[language]
                yield answer_text
                answer = self._finish(text, answer_text, "no_documents", [], [], timings, gens, meter, started,
                                      standalone if history else None, language)
            else:
                answer = yield from self._answer(
                    text, standalone if history else None, hits, language, timings, gens, partial, meter, started
                )
        except OverBudget as exc:
            row.update(status="over_budget", error=str(exc))
            raise
        except AskError as exc:
            row.update(status="rejected", error=str(exc))
            raise
        except (ContextTooLong, PromptTooLong) as exc:
            row.update(status="rejected", error=str(exc))
            raise AskError(str(exc)) from exc
        except ModelError as exc:
            row.update(status="error", error=f"model failed: {exc}", answer="".join(partial) or None)
            raise
        except Exception as exc:
            row.update(status="error", error=f"{type(exc).__name__}: {exc}", answer="".join(partial) or None)
            raise
        finally:
            if answer is not None:
                row.update(status=answer.status, answer=answer.text)
            else:
                # Failed before an answer: still account the energy and tokens spent (none when refused
                # for budget: the refusal itself is not charged).
                if row["status"] == "over_budget":
                    meter.stop()  # leaves the work in flight; the refusal itself is charged nothing
                    cost = CostRecord()
                else:
                    cost = self._cost(gens, meter, started)
                row.update(cost=cost, timings=timings)
            if principal is not None:
                row.setdefault("user_name", principal.name)
            row.setdefault("user_name", str(user) if user else "system")
            query_id = self._log(row, answer, gens)
            if answer is not None:
                answer.query_id = query_id
        yield answer

    def _answer(self, text, rewritten, hits, language, timings, gens, partial, meter, started):
        """Pack, generate (streaming), check citations; yields pieces and returns the Answer."""
        settings = self.assistant.settings
        llm = self.assistant.llm
        t = time.perf_counter()
        max_tokens = settings.max_answer_tokens
        packed = pack_prompt(
            rewritten or text,
            [(h.text, source_label(h), h) for h in hits],
            count_chat_tokens=llm.count_chat_tokens,
            count_tokens=llm.count_tokens,
            context_window=llm.info.context_window,
            max_answer_tokens=max_tokens,
            language=language,
        )
        llm.check_fits(packed.prompt_tokens, max_tokens)
        timings["prompt"] = (time.perf_counter() - t) * 1000

        generation, held = yield from self._generate(packed.messages, max_tokens, partial)
        gens["answer"] = generation
        timings["prefill"] = generation.stats.prefill_seconds * 1000
        timings["decode"] = generation.stats.decode_seconds * 1000

        # Each citation is checked against the passage it names (its source line and text, as the model saw).
        evidence = [f"{p.source}\n{p.text}" for p in packed.passages]
        checked = check_citations(generation.text, passages=evidence)
        if checked.cited and is_citations_only(checked.text):
            # A bare "[2][3]" names the sources but answers nothing: ask once more for the words.
            retry_messages = answer_in_words_messages(packed.messages, checked.text, language)
            try:
                llm.check_fits(llm.count_chat_tokens(retry_messages), max_tokens)
            except ContextTooLong:
                log.info("citation-only answer kept: no room in the window to ask again for the words")
            else:
                t = time.perf_counter()
                retry, held = yield from self._generate(retry_messages, max_tokens, partial)
                gens["retry"] = retry
                timings["retry"] = (time.perf_counter() - t) * 1000
                first = checked
                checked = check_citations(retry.text, passages=evidence)
                checked.removed[:0] = first.removed
                checked.unsupported[:0] = first.unsupported
                if not checked.cited and not is_not_found(checked.text):
                    # The bare reply named sources: keep those that the words of the retry bear out.
                    checked.cited.extend(n for n in first.cited if supports_answer(checked.text, evidence[n - 1]))
        if held:
            yield held
        attributed: list[int] = []
        if checked.text.strip() and not is_not_found(checked.text) and not is_citations_only(checked.text):
            # Each sentence the model left without a (supported) citation gets the passage that bears it out;
            # a sentence no passage supports stays uncited.
            t = time.perf_counter()
            found = attribute(checked.text, evidence, question=rewritten or text, embed=self._embed)
            timings["attribute"] = (time.perf_counter() - t) * 1000
            attributed = [n for n in found.attributed if n not in checked.cited]
            checked = CitationCheck(found.text, [*checked.cited, *attributed], checked.removed, checked.unsupported)
        status = "ok"
        citations: list[Citation] = []
        if is_not_found(checked.text) or not checked.text.strip():
            status = "no_answer"
            answer_text = checked.text.strip() or NOT_FOUND[language]
        else:
            answer_text = checked.text
            by_ref = {p.ref: p.key for p in packed.passages}
            for ref in checked.cited:
                hit = by_ref[ref]
                citations.append(
                    Citation(ref, hit.document_id, hit.title, hit.path, location_of(hit), _snippet(hit.text),
                             float(hit.score_fused), hit.chunk_id, attributed=ref in attributed)
                )
        passages = [
            {"ref": p.ref, "chunk_id": p.key.chunk_id, "document_id": p.key.document_id, "path": p.key.path,
             "title": p.key.title, "location": location_of(p.key), "text": p.text,
             "score": float(p.key.score_fused)}
            for p in packed.passages
        ]
        return self._finish(text, answer_text, status, citations, passages, timings, gens, meter, started,
                            rewritten, language, checked.removed, checked.unsupported)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Attribution's embedder: the store's model, which embedded the query, at the query thread count."""
        embedder = self.assistant.embedder
        threads = self.assistant.settings.query_threads
        return np.stack([embedder.encode_query(t, threads=threads) for t in texts])

    def _generate(self, messages: list[dict[str, str]], max_tokens: int, partial: list[str]):
        """Stream one generation; pieces that are only citations so far are held back (they may be all
        there is, and then the words are asked for), the rest are passed on as they come.
        Returns the Generation and the text still held back (non-empty only for a citation-only reply)."""
        generation: Generation | None = None
        held: list[str] = []
        released = False
        for item in self.assistant.llm.stream(messages, max_tokens=max_tokens, temperature=0.0):
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
        return generation, "".join(held)

    # --- stages --------------------------------------------------------------------------------------
    @staticmethod
    def _validate(question: str) -> str:
        if question is None or not str(question).strip():
            raise AskError("the question is empty")
        text = str(question).strip()
        if len(text) > MAX_QUESTION_CHARS:
            raise AskError(
                f"the question is {len(text):,} characters long; the limit is {MAX_QUESTION_CHARS:,}. "
                "Ask about one thing at a time, or ingest long material as a document."
            )
        return text

    def _rewrite(self, history: Sequence[dict[str, str]], question: str) -> tuple[str, Generation]:
        llm = self.assistant.llm
        generation = llm.generate(rewrite_messages(history, question), max_tokens=64, temperature=0.0)
        rewritten = generation.text.strip().strip('"').splitlines()[0].strip() if generation.text.strip() else ""
        return (rewritten or question), generation

    def _retrieve(self, query: str, principal: Principal, collections: Sequence[str] | None) -> list[Any]:
        from retrieval.filters import SearchFilters

        filters = SearchFilters(collections=tuple(collections)) if collections else None
        return self.assistant.search(query, user=principal, k=self.assistant.settings.ask_passages, filters=filters)

    # --- accounting ----------------------------------------------------------------------------------
    def _cost(self, gens: dict[str, Generation], meter: EnergyMeter, started: float) -> CostRecord:
        energy = meter.stop()
        wall = time.perf_counter() - started
        stats = [g.stats for g in gens.values()]
        merged = _merge_stats(stats)
        llm = self.assistant.loaded_llm
        total_params = float(llm.info.total_params) if llm is not None else 0.0
        decode_tokens = sum(s.completion_tokens for s in stats)
        decode_s = sum(s.decode_seconds for s in stats)
        active = (
            sum(s.active_params_per_token * (s.prompt_tokens + s.completion_tokens) for s in stats)
            / max(1, merged["prompt_tokens"] + merged["completion_tokens"])
            if stats else 0.0
        )
        flops = {}
        for role, g in gens.items():
            if role == "answer":
                flops["prefill"] = g.stats.flops_prefill
                flops["decode"] = g.stats.flops_decode
            else:
                flops[role] = g.stats.flops_total
        electricity = self.cost_model.electricity_usd(energy.joules)
        # The box's time shared among the work in flight, not the whole wall time to each query.
        hardware = self.cost_model.hardware_usd_for(energy.hardware_seconds)
        return CostRecord(
            prompt_tokens=int(merged["prompt_tokens"]),
            completion_tokens=int(merged["completion_tokens"]),
            tokens_per_second=decode_tokens / decode_s if decode_s > 0 else 0.0,
            total_params=total_params,
            active_params_per_token=active,
            flops=flops,
            flops_total=merged["flops"],
            dense_flops_total=merged["dense_flops"],
            sparsity_saving=1 - merged["flops"] / merged["dense_flops"] if merged["dense_flops"] else 0.0,
            accounting="measured" if stats and all(s.accounting == "measured" for s in stats) else "modelled",
            energy_joules=energy.joules,
            energy_source=energy.source,
            energy_method=energy.method,
            cpu_seconds=energy.cpu_seconds,
            cpu_time_method=energy.cpu_method,
            hardware_seconds=energy.hardware_seconds,
            electricity_usd=electricity,
            hardware_usd=hardware,
            total_usd=electricity + hardware,
            cloud_usd=self.cost_model.cloud_usd(int(merged["prompt_tokens"]), int(merged["completion_tokens"])),
            wall_seconds=wall,
            engine=llm.engine_name if llm is not None else "",
        )

    def _finish(self, question, text, status, citations, passages, timings, gens, meter, started,
                rewritten, language, removed=None, unsupported=None) -> Answer:
        cost = self._cost(gens, meter, started)
        timings["total"] = cost.wall_seconds * 1000
        llm = self.assistant.loaded_llm
        return Answer(
            question=question, text=text, status=status, citations=citations, passages=passages,
            timings_ms={k: round(v, 2) for k, v in timings.items()}, prompt_tokens=cost.prompt_tokens,
            completion_tokens=cost.completion_tokens, cost=cost, rewritten_question=rewritten,
            language=language, model=llm.info.name if llm is not None else None, removed_citations=removed or [],
            unsupported_citations=unsupported or [],
        )

    def _log(self, row: dict[str, Any], answer: Answer | None, gens: dict[str, Generation]) -> int | None:
        cost: CostRecord = answer.cost if answer is not None else row["cost"]
        timings = answer.timings_ms if answer is not None else row.get("timings", {})
        llm = self.assistant.loaded_llm
        entry = ledger.entry(
            cost,
            user_name=row["user_name"],
            collections=row["collections"],
            question=row["question"],
            rewritten_question=row.get("rewritten_question"),
            answer=row.get("answer"),
            status=row["status"],
            error=row.get("error"),
            model=llm.info.name if llm is not None else None,
            backend=llm.info.backend if llm is not None else None,
            timings_ms=timings,
            details={
                "citations": [asdict(c) for c in answer.citations] if answer else [],
                "expert_histogram": _summed_histogram(gens.values()),
            },
        )
        return ledger.write(self.assistant.engine, entry)
