"""Calibration chats the routers are fitted on: a SQuAD file, the bundled text, or the customer's documents.

The routers learn which experts a token needs from these chats, so their prompt shape matters: all of them
are answer turns (context + question). The SQuAD file comes from settings (``SPARQ_SQUAD_PATH``), never
from a machine's layout; without it the text bundled beside this module is used: passages in English and
Chinese written for sparq (CC0, see its header), turned into the same multi-passage, cited answer turns the
ask path sends, so every user's build calibrates on the same text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from model.base import ModelError

RAG_SYSTEM = "Answer the question using only the context. Reply with the shortest exact answer."
BUNDLED_TEXT = Path(__file__).with_name("calibration.txt")
# passages per bundled chat (the ask path sends up to 6; 4 shows more chats per token budget)
BUNDLED_PER_PROMPT = 4
REFUSAL_EVERY = 8  # every 8th bundled chat asks about a passage it does not show
CALIBRATION_QUESTION = {
    "en": "What do these passages say? Answer with citations.",
    "zh": "这些段落讲了什么？请注明引用的段落编号。",
}


def squad_path() -> Path | None:
    """The SQuAD dev JSON named by SPARQ_SQUAD_PATH, or None when it is unset (then the bundled calibration
    text is used). Never a path of some machine: a user's build must calibrate on what their settings say, so
    a setting naming no file is an error, not a silent fallback to another text."""
    env = os.environ.get("SPARQ_SQUAD_PATH", "").strip()
    if not env:
        return None
    if not Path(env).is_file():
        raise ModelError(
            f"SPARQ_SQUAD_PATH names {env!r}, which is not a file; point it at a SQuAD v1.1 JSON "
            "or unset it to calibrate on the bundled text"
        )
    return Path(env)


def rag_messages(context: str, question: str) -> list[dict[str, str]]:
    """The prompt shape used for calibration and the bench (same as a RAG answer turn)."""
    return [
        {"role": "system", "content": RAG_SYSTEM},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


def default_calibration_samples(skip_articles: int = 10) -> Iterable[list[dict[str, str]]]:
    """RAG-shaped chats from SQuAD dev articles the bench does not score (articles >= skip)."""
    path = squad_path()
    if path is None:
        yield from bundled_calibration_samples()
        return
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    for art in data[skip_articles:]:
        for para in art["paragraphs"]:
            for qa in para["qas"][:2]:
                msgs = rag_messages(para["context"], qa["question"])
                msgs.append({"role": "assistant", "content": qa["answers"][0]["text"]})
                yield msgs


@dataclass(frozen=True)
class CalibrationPassage:
    """One block of the bundled text: a passage, the title its header shows, and a question it answers."""

    source: str
    text: str
    question: str
    answer: str
    language: str


def read_calibration_passages(path: Path = BUNDLED_TEXT) -> list[CalibrationPassage]:
    """The S:/C:/Q:/A: blocks of the bundled text (``#`` lines are comments); a malformed block is an error
    naming it, so a broken edit of the file fails the build instead of silently calibrating on less."""
    from model.prompting import language_of

    passages = []
    text = _without_comments(path)
    for n, block in enumerate(b for b in text.split("\n\n") if b.strip()):
        fields: dict[str, str] = {}
        for line in block.strip().splitlines():
            key, sep, value = line.partition(":")
            if not sep or key not in {"S", "C", "Q", "A"} or key in fields or not value.strip():
                raise ModelError(f"{path.name}: block {n + 1} has a malformed line: {line[:60]!r}")
            fields[key] = value.strip()
        if fields.keys() != {"S", "C", "Q", "A"}:
            raise ModelError(
                f"{path.name}: block {n + 1} lacks {sorted({'S', 'C', 'Q', 'A'} - fields.keys())}"
            )
        passages.append(
            CalibrationPassage(fields["S"], fields["C"], fields["Q"], fields["A"], language_of(fields["C"]))
        )
    if not passages:
        raise ModelError(f"{path.name}: the bundled calibration text is empty")
    return passages


def bundled_calibration_samples(
    passages: list[CalibrationPassage] | None = None, per_prompt: int = BUNDLED_PER_PROMPT
) -> Iterator[list[dict[str, str]]]:
    """Answer turns of the exact shape ``ask`` sends, from the bundled text, for builds without other text.

    Each chat holds ``per_prompt`` numbered passages of one language, as retrieval returns them: the
    question's own passage at a rotating position among others, and a cited short answer; every
    ``REFUSAL_EVERY``-th chat asks about a passage that is not there and gets the not-found reply, so the
    routers also see that turn. The languages alternate in proportion, so any token budget covers both;
    after every passage has been shown once, the groups are formed again with another stride. The order is
    fixed (a seeded shuffle), so two builds calibrate on the same chats.
    """
    from model.prompting import NOT_FOUND, Passage, grounded_messages

    if per_prompt < 2:
        raise ValueError("per_prompt must be >= 2")
    by_language: dict[str, list[CalibrationPassage]] = {}
    for p in passages if passages is not None else read_calibration_passages():
        by_language.setdefault(p.language, []).append(p)
    for group in by_language.values():  # a fixed shuffle: any prefix mixes the file's topics
        random.Random(len(group)).shuffle(group)

    def chats(group: list[CalibrationPassage]) -> Iterator[list[dict[str, str]]]:
        n = len(group)
        size = min(per_prompt, n)
        for rnd in range(n):  # round r steps through the passages by the first stride >= 1 + r coprime with n
            stride = next(s for s in range(1 + rnd, 1 + rnd + n) if math.gcd(s, n) == 1)
            order = [group[(i * stride + rnd) % n] for i in range(n)]
            for index, start in enumerate(range(0, n, size)):  # the last group wraps round to the first
                shown = [order[(start + j) % n] for j in range(size)]
                language = shown[0].language
                # a refusal asks about the next passage not shown (there is one whenever n > size)
                refusal = n > size and index % REFUSAL_EVERY == REFUSAL_EVERY - 1
                if refusal:
                    asked = next(p for p in order[start:] + order[:start] if p not in shown)
                else:
                    asked = shown[(index + rnd) % size]
                msgs = grounded_messages(
                    asked.question,
                    [Passage(i + 1, p.text, p.source) for i, p in enumerate(shown)],
                    language,
                )
                reply = NOT_FOUND[language] if refusal else f"{asked.answer} [{shown.index(asked) + 1}]"
                yield msgs + [{"role": "assistant", "content": reply}]

    streams = {lang: chats(group) for lang, group in sorted(by_language.items())}
    weights = {lang: len(group) for lang, group in by_language.items()}
    shown_so_far = dict.fromkeys(streams, 0)
    while streams:  # the language furthest behind its share goes next
        lang = min(streams, key=lambda x: shown_so_far[x] / weights[x])
        chat = next(streams[lang], None)
        if chat is None:
            del streams[lang]
            continue
        shown_so_far[lang] += 1
        yield chat


def _without_comments(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    )


def default_calibration_id() -> str:
    """Fingerprint of the text a build without custom calibration uses (the SQuAD file named by the settings,
    or the bundled text without its comments), recorded in its settings so that a changed text rebuilds the
    model and an edited comment does not."""
    path = squad_path()
    if path is not None:
        return f"squad:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    return f"bundled:{hashlib.sha256(_without_comments(BUNDLED_TEXT).encode()).hexdigest()[:16]}"


def document_calibration_samples(
    passages: Iterable[tuple[str, str]], per_prompt: int = 2
) -> Iterator[list[dict[str, str]]]:
    """Answer-turn chats (the exact prompt ``ask`` sends) over the customer's own (text, source) passages.

    The routers learn which experts a token needs from the calibration text, so routers fitted on
    English encyclopedia paragraphs in a short-answer prompt pick worse experts for another language,
    domain or prompt; calibrating on the documents the model will answer over removes that mismatch.
    Consecutive passages share a prompt, so pass them shuffled across documents.
    """
    from model.prompting import Passage, grounded_messages, language_of

    if per_prompt < 1:
        raise ValueError("per_prompt must be >= 1")

    def chat(batch: list[Passage]) -> list[dict[str, str]]:
        language = language_of("".join(p.text for p in batch))
        return grounded_messages(CALIBRATION_QUESTION[language], batch, language)

    batch: list[Passage] = []
    for text, source in passages:
        batch.append(Passage(len(batch) + 1, text, source))
        if len(batch) == per_prompt:
            yield chat(batch)
            batch = []
    if batch:
        yield chat(batch)
