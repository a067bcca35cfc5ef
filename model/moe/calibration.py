"""Calibration chats the routers are fitted on: a SQuAD file, the bundled text, or the customer's documents.

The routers learn which experts a token needs from these chats, so their prompt shape matters: all of them
are answer turns (context + question). The SQuAD file comes from settings (``SPARQ_SQUAD_PATH``), never
from a machine's layout; without it the small text bundled beside this module is used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from model.base import ModelError

RAG_SYSTEM = "Answer the question using only the context. Reply with the shortest exact answer."
BUNDLED_TEXT = Path(__file__).with_name("calibration.txt")
CALIBRATION_QUESTION = {
    "en": "What do these passages say? Answer with citations.",
    "zh": "这些段落讲了什么？请注明引用的段落编号。",
}


def squad_path() -> Path | None:
    """The SQuAD dev JSON named by SPARQ_SQUAD_PATH, if it is a file; otherwise the bundled calibration text
    is used. Never a path of some machine: a user's build must calibrate on what their settings say."""
    env = os.environ.get("SPARQ_SQUAD_PATH")
    if env and Path(env).is_file():
        return Path(env)
    return None


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


def bundled_calibration_samples() -> Iterable[list[dict[str, str]]]:
    """RAG-shaped chats from the bundled calibration.txt (C:/Q:/A: blocks), for machines without SQuAD.

    The set is small (~2.5k tokens); calibration on the customer's own documents is better.
    """
    text = BUNDLED_TEXT.read_text(encoding="utf-8")
    chats = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if {"C", "Q", "A"} <= fields.keys():
            chats.append(
                rag_messages(fields["C"], fields["Q"]) + [{"role": "assistant", "content": fields["A"]}]
            )
    if not chats:
        raise ModelError("bundled calibration text is empty or malformed")
    yield from chats


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
