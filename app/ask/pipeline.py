"""The ask as a pipeline: rewrite a follow-up -> retrieve -> pack the prompt -> generate -> check citations
-> meter the cost -> log. Each step is built with what it needs (see app.container); this module only runs
them in order and turns whatever happens into one query_log row."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.ask import citations
from app.ask.answer import Answer, AnswerStatus, Citation
from app.ask.attribute import Attributor
from app.ask.followup import FollowUpRewriter
from app.ask.generate import StreamingGenerator
from app.ask.log import AskRecord, QueryLogWriter
from app.ask.metering import CostMeter, Metering
from app.ask.prompt import PromptPacker, evidence_of, passage_records
from app.ask.question import MAX_QUESTION_CHARS, AskError, validate_question
from app.ask.retrieve import Retriever
from app.costs.budgets import OverBudget
from model.base import ContextTooLong, Generation, LLMEngine, ModelError
from model.prompting import PromptTooLong, answer_in_words_messages, language_of
from retrieval.access import Principal

log = logging.getLogger(__name__)

NO_DOCUMENTS = {
    "en": "None of the documents you can access match this question, so I cannot answer it.",
    "zh": "您可访问的文档中没有与此问题相关的内容，因此无法回答。",
}


@dataclass
class Trace:
    """One ask in progress: its meter, stage timings, generations by role (in the order they ran) and every
    piece the model produced (logged when it fails mid-stream)."""

    metering: Metering
    timings: dict[str, float] = field(default_factory=dict)
    gens: dict[str, Generation] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time the block as `stage`; a block that raises records nothing."""
        started = time.perf_counter()
        yield
        self.timings[stage] = (time.perf_counter() - started) * 1000


class AskPipeline:
    """Runs the steps for one question; safe to share between threads (each ask has its own Trace)."""

    def __init__(
        self,
        *,
        principal: Callable[[str | Principal | None], Principal],
        check_budget: Callable[[Principal], None],
        rewriter: FollowUpRewriter,
        retriever: Retriever,
        packer: PromptPacker,
        generator: StreamingGenerator,
        attributor: Attributor,
        meter: CostMeter,
        query_log: QueryLogWriter,
        loaded_llm: Callable[[], LLMEngine | None],
    ) -> None:
        self._principal = principal  # who is asking (unknown or disabled users are refused)
        self._check_budget = check_budget  # raises OverBudget before any model call
        self.rewriter = rewriter
        self.retriever = retriever
        self.packer = packer
        self.generator = generator
        self.attributor = attributor
        self.meter = meter
        self.query_log = query_log
        self._loaded_llm = loaded_llm  # names the model in the Answer; never loads one

    def run(
        self,
        question: str,
        *,
        user: str | Principal | None,
        collections: Sequence[str] | None,
        history: Sequence[dict[str, str]] | None,
    ) -> Iterator[str | Answer]:
        """Yields answer text pieces as the model produces them, then the final Answer."""
        trace = Trace(self.meter.start())
        record = AskRecord(
            question=(question or "")[:MAX_QUESTION_CHARS], collections=list(collections or [])
        )
        answer: Answer | None = None
        try:
            text = validate_question(question)
            principal = self._principal(user)
            record.user_name = principal.name
            self._check_budget(principal)  # before any model call: a spent budget costs nothing
            answer = yield from self._ask(text, principal, collections, history, trace, record)
        except OverBudget as exc:
            record.end("over_budget", str(exc))
            raise
        except AskError as exc:
            record.end("rejected", str(exc))
            raise
        except (ContextTooLong, PromptTooLong) as exc:
            record.end("rejected", str(exc))
            raise AskError(str(exc)) from exc
        except ModelError as exc:
            record.end("error", f"model failed: {exc}", "".join(trace.partial) or None)
            raise
        except Exception as exc:
            record.end("error", f"{type(exc).__name__}: {exc}", "".join(trace.partial) or None)
            raise
        finally:
            if record.user_name is None:
                record.user_name = str(user) if user else "system"
            query_id = self._log(record, answer, trace)
            if answer is not None:
                answer.query_id = query_id
        yield answer

    def _ask(
        self,
        text: str,
        principal: Principal,
        collections: Sequence[str] | None,
        history: Sequence[dict[str, str]] | None,
        trace: Trace,
        record: AskRecord,
    ) -> Generator[str, None, Answer]:
        language = language_of(text)
        rewritten: str | None = None
        if history:
            with trace.timed("rewrite"):
                rewrite = self.rewriter.run(history, text)
            trace.gens["rewrite"] = rewrite.generation
            rewritten = record.rewritten_question = rewrite.question
        retrieval = self.retriever.run(rewritten or text, principal, collections)
        trace.timings.update(retrieval.timings_ms)
        if not retrieval.hits:
            answer_text = NO_DOCUMENTS[language]
            yield answer_text
            return self._finish(text, answer_text, "no_documents", [], [], trace, rewritten, language)
        return (yield from self._answer(text, rewritten, retrieval.hits, language, trace))

    def _answer(
        self, text: str, rewritten: str | None, hits: list[Any], language: str, trace: Trace
    ) -> Generator[str, None, Answer]:
        """Pack, generate (streaming), check citations; yields pieces and returns the Answer."""
        question = rewritten or text
        with trace.timed("prompt"):
            packed = self.packer.run(question, hits, language)
        generated = yield from self.generator.run(packed.messages, trace.partial)
        trace.gens["answer"] = generated.generation
        trace.timings["prefill"] = generated.generation.stats.prefill_seconds * 1000
        trace.timings["decode"] = generated.generation.stats.decode_seconds * 1000

        # Each citation is checked against the passage it names (its source line and text, as the model saw).
        evidence = evidence_of(packed)
        checked = citations.check(generated.generation.text, evidence)
        held = generated.held
        if citations.is_bare(checked):
            # A bare "[2][3]" names the sources but answers nothing: ask once more for the words.
            retry_messages = answer_in_words_messages(packed.messages, checked.text, language)
            if not self.generator.fits(retry_messages):
                log.info("citation-only answer kept: no room in the window to ask again for the words")
            else:
                with trace.timed("retry"):
                    retry = yield from self.generator.run(retry_messages, trace.partial)
                    trace.gens["retry"] = retry.generation
                checked = citations.merge_retry(checked, retry.generation.text, evidence)
                held = retry.held
        if held:
            yield held
        attributed: list[int] = []
        if citations.wants_attribution(checked):
            with trace.timed("attribute"):
                found = self.attributor.run(checked, evidence, question=question)
            checked, attributed = found.checked, found.attributed
        resolved = citations.resolve(checked, packed, attributed, language)
        return self._finish(
            text,
            resolved.text,
            resolved.status,
            resolved.citations,
            passage_records(packed),
            trace,
            rewritten,
            language,
            checked.removed,
            checked.unsupported,
        )

    def _finish(
        self,
        question: str,
        text: str,
        status: AnswerStatus,
        cited: list[Citation],
        passages: list[dict[str, Any]],
        trace: Trace,
        rewritten: str | None,
        language: str,
        removed: list[int] | None = None,
        unsupported: list[int] | None = None,
    ) -> Answer:
        cost = self.meter.cost(trace.metering, trace.gens)
        trace.timings["total"] = cost.wall_seconds * 1000
        llm = self._loaded_llm()
        return Answer(
            question=question,
            text=text,
            status=status,
            citations=cited,
            passages=passages,
            timings_ms={k: round(v, 2) for k, v in trace.timings.items()},
            prompt_tokens=cost.prompt_tokens,
            completion_tokens=cost.completion_tokens,
            cost=cost,
            rewritten_question=rewritten,
            language=language,
            model=llm.info.name if llm is not None else None,
            removed_citations=removed or [],
            unsupported_citations=unsupported or [],
        )

    def _log(self, record: AskRecord, answer: Answer | None, trace: Trace) -> int:
        """The row for the answer, or for an ask that failed before one: its energy and tokens still
        accounted, except a refusal for budget, which is charged nothing."""
        if answer is not None:
            record.status, record.answer = answer.status, answer.text
            cost, timings = answer.cost, answer.timings_ms
        else:
            refused = record.status == "over_budget"
            cost = (
                self.meter.refuse(trace.metering) if refused else self.meter.cost(trace.metering, trace.gens)
            )
            timings = trace.timings
        return self.query_log.write(
            record,
            cost=cost,
            timings_ms=timings,
            citations=answer.citations if answer else [],
            gens=trace.gens,
        )
