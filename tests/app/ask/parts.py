"""What the ask's step tests share besides fixtures: the askers, a scripted engine around the real model, and
providers that show what a step loads."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from model.base import Generation, LLMEngine
from retrieval.access import Principal

ALICE = Principal("alice", frozenset({"staff"}))
MALLORY = Principal("mallory", frozenset({"contractors"}))


class ScriptedEngine(LLMEngine):
    """The real engine, but every reply is `reply` (streamed in `pieces`, with the real stats of one real
    token), so what the model "said" is known; `stream_result=False` drops the final Generation."""

    def __init__(
        self, inner: LLMEngine, reply: str, *, pieces: list[str] | None = None, stream_result: bool = True
    ) -> None:
        self.inner = inner
        self.info = inner.info
        self.reply = reply
        self.pieces = pieces if pieces is not None else [reply[: len(reply) // 2], reply[len(reply) // 2 :]]
        self.stream_result = stream_result
        self.calls: list[list[dict[str, str]]] = []

    @property
    def engine_name(self) -> str:
        return self.inner.engine_name

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_chat_tokens(self, messages) -> int:
        return self.inner.count_chat_tokens(messages)

    def stream(self, messages, *, max_tokens, temperature=0.0, stop=None) -> Iterator[str | Generation]:
        self.calls.append([dict(m) for m in messages])
        items = list(self.inner.stream(messages, max_tokens=1, temperature=temperature))
        yield from (p for p in self.pieces if p)
        if self.stream_result:
            result = next(item for item in items if isinstance(item, Generation))
            yield dataclasses.replace(result, text=self.reply)


def provider(value: Any) -> Any:
    """A provider that counts its calls (`provider.calls`): shows what a step loads, and when."""

    def get() -> Any:
        get.calls += 1  # type: ignore[attr-defined]
        return value

    get.calls = 0  # type: ignore[attr-defined]
    return get


def refused(what: str) -> Any:
    """A provider that must not be called (the step must not load `what`)."""

    def get() -> Any:
        raise AssertionError(f"{what} was loaded, but this path must not need it")

    return get
