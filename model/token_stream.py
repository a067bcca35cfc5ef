"""Sampled tokens to streamed text, shared by the engines that sample token by token (llama.cpp, ik_llama.cpp).

Generation stops at end-of-generation, at a stop string or at `max_tokens`; text that could still be the
start of a stop string is held back until it cannot; a character split across tokens is decoded whole.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

from model.accounting import build_stats, forward_flops
from model.base import GenerationStats, ModelInfo


@dataclass(frozen=True)
class DecodedText:
    """A sampled token stream's text with its count, finish reason and timings, for the generation stats."""

    text: str
    n_out: int  # tokens sampled, the end-of-generation token included
    finish: str  # stop | length
    t_first: float  # perf_counter() when the first token was sampled (end of prefill)
    t_end: float  # perf_counter() when sampling stopped


def stream_text(
    tokens: Iterable[int],
    *,
    piece: Callable[[int], bytes],
    is_eog: Callable[[int], bool],
    stop: list[str],
    max_tokens: int,
    t0: float,
    check: Callable[[], None] | None = None,
) -> Generator[str, None, DecodedText]:
    """Yield the text of `tokens` as it becomes safe to show; return what was generated (`yield from`).

    `tokens` is asked for the next token only while generation goes on, so an engine that evaluates a token
    when the next one is requested never evaluates one that is not used. `check` (e.g. a capture's
    `raise_errors`) runs before each token is taken and once when sampling ends, before the last text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    emitted = 0
    hold = max((len(s) for s in stop), default=0)
    n_out = 0
    finish = "length"
    t_first = t0
    for tok in tokens:
        if check is not None:
            check()
        n_out += 1
        if n_out == 1:
            t_first = time.perf_counter()
        if is_eog(tok):
            finish = "stop"
            break
        text += decoder.decode(piece(tok))
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            finish = "stop"
            if len(text) > emitted:
                yield text[emitted:]
                emitted = len(text)
            break
        safe = len(text) - hold
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
        if n_out >= max_tokens:
            break
    t_end = time.perf_counter()
    if check is not None:
        check()
    if finish == "length":
        text += decoder.decode(b"", final=True)
    if len(text) > emitted:
        yield text[emitted:]
    return DecodedText(text, n_out, finish, t_first, t_end)


def sampled_stats(
    info: ModelInfo, capture: Any, *, prompt_tokens: int, t0: float, out: DecodedText
) -> GenerationStats:
    """The generation's cost figures, with expert counts from `capture` (a cb_eval histogram) when it has them."""
    hist = capture.histogram() if capture is not None else None
    stats = build_stats(
        info,
        prompt_tokens=prompt_tokens,
        completion_tokens=out.n_out,
        prefill_seconds=out.t_first - t0,
        decode_seconds=out.t_end - out.t_first if out.n_out > 1 else 0.0,
        histogram=hist[0] if hist else None,
        histogram_tokens=hist[1] if hist else 0,
        accounting="measured" if (hist or not info.is_moe) else "modelled",
    )
    # decode speed: n_out - 1 tokens were evaluated after the first sample
    stats.tokens_per_second = (out.n_out - 1) / stats.decode_seconds if stats.decode_seconds > 0 else 0.0
    return stats


def charge_computed_prompt(
    stats: GenerationStats, info: ModelInfo, *, reused: int, prompt_tokens: int
) -> None:
    """Charge and time only the prompt tokens that were computed when the first ``reused`` came from the KV
    cache: their FLOPs (each attending to the cached prefix too) and the prefill rate of those tokens."""
    if reused <= 0:
        return
    n_new = prompt_tokens - reused
    stats.flops_prefill = forward_flops(info, stats.active_params_per_token, reused, n_new)
    stats.dense_flops_prefill = forward_flops(info, float(info.total_params), reused, n_new)
    stats.prefill_tokens_per_second = n_new / stats.prefill_seconds if stats.prefill_seconds > 0 else 0.0


# How much of a prompt an engine may take from the KV cache of the one before: "system" (the default) only the
# system turn and the next turn's header, text every user's prompt starts with; "all" any shared prefix, which
# also spares the passages of a follow-up question, but on a model serving several users the time of an
# answer would then tell whether the last one came from the same passages and question (another user's);
# "off" none.
PREFIX_REUSE = ("system", "all", "off")


def prefix_reuse_scope(value: bool | str) -> str:
    """The scope a ``reuse_prefix`` option names (True is "system", False "off"); anything else is refused."""
    scope = ("system" if value else "off") if isinstance(value, bool) else value
    if scope not in PREFIX_REUSE:
        raise ValueError(f"reuse_prefix={value!r}: choose one of {', '.join(PREFIX_REUSE)} (or True / False)")
    return str(scope)


def reuse_limit(
    scope: str, messages: list[dict[str, str]], tokens: list[int], chat_tokens: Callable[..., list[int]]
) -> int:
    """How many leading ``tokens`` (the templated ``messages``) ``scope`` lets come from the cache: for
    "system", the part they share with the system turn followed by an empty user turn."""
    if scope == "all":
        return len(tokens)
    if scope == "off" or not messages or messages[0].get("role") != "system":
        return 0
    public = chat_tokens([messages[0], {"role": "user", "content": ""}])
    return common_prefix(public, tokens)


def common_prefix(a: list[int], b: list[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable_prefix(cached: list[int], tokens: list[int], limit: int) -> int:
    """How many leading ``tokens`` to take from the KV cache of ``cached``: the part it already holds, at most
    ``limit`` (:func:`reuse_limit`); at least one token is always left to compute, because sampling needs the
    logits of the prompt's last one."""
    return common_prefix(cached, tokens[: min(limit, len(tokens) - 1)])
