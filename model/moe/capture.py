"""Each layer's FFN input on the calibration chats, captured from the dense source in llama.cpp.

The split and the routers are fitted on what the FFNs really see (the normalised hidden state,
``ffn_norm-<il>``), so the dense model is run once over the calibration chats with llama.cpp's graph
callback keeping those inputs; the same engine code then serves the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from model.base import ModelError
from model.moe.progress import Progress, say

MAX_SAMPLE_TOKENS = 1536  # tokens kept of one calibration chat (the capture runs with a 2048 context)


def capture_ffn_inputs(
    source: Path,
    samples: Iterable[list[dict[str, str]]],
    n_tokens: int,
    *,
    n_threads: int | None = None,
    progress: Progress | None = None,
) -> dict[int, np.ndarray]:
    """Run the dense model in llama.cpp and keep each layer's normalised FFN input, [N, d]."""
    from model.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(
        source, n_ctx=2048, n_threads=n_threads, capture_experts=False, capture_ffn_input=True
    )
    try:
        cap = eng.capture
        assert cap is not None
        per_layer: dict[int, list[np.ndarray]] = {}
        seen = 0
        for msgs in samples:
            toks = eng.chat_tokens(msgs)[:MAX_SAMPLE_TOKENS]
            cap.reset()
            eng.eval_tokens(toks)
            for il, arrs in cap.ffn_inputs.items():
                per_layer.setdefault(il, []).extend(arrs)
            seen += len(toks)
            say(
                progress,
                f"calibration capture {min(seen, n_tokens)}/{n_tokens} tokens",
                0.05 * min(seen / n_tokens, 1),
            )
            if seen >= n_tokens:
                break
        if seen == 0:
            raise ModelError("calibration produced no tokens")
    finally:
        eng.close()
    return {il: np.concatenate(v, axis=0)[:n_tokens] for il, v in per_layer.items()}
