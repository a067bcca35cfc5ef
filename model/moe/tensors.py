"""The Qwen2-MoE tensors of one MoEfied layer, scaled so that with all experts active it equals the dense block.

Exactness trick for engines that softmax the router logits without renormalising the top-k weights
(Qwen2-MoE in llama.cpp and transformers): router logits are scaled down to ~1e-3 so every selected
weight is ~1/E (ranking preserved), and each expert's down projection is scaled by E; the shared
expert's sigmoid gate sees a tiny input (~0.5) and its down projection is scaled by 2. With all experts
active the MoE block therefore reproduces the dense block.
"""

from __future__ import annotations

import numpy as np

from model.moe.layer import MoELayer

ROUTER_LOGIT_SCALE = 1e-3
SHARED_GATE_SCALE = 1e-4


def expert_tensors(
    wg: np.ndarray, wu: np.ndarray, wd: np.ndarray, layer: MoELayer, d_model: int
) -> dict[str, np.ndarray]:
    """Qwen2-MoE tensors for one layer (numpy, row-major, GGUF/transformers orientation).

    Keys: router [E, d], gate_exps/up_exps [E, m, d], down_exps [E, d, m] (scaled by E),
    shexp_gate_inp [d], gate_shexp/up_shexp [S, d], down_shexp [d, S] (scaled by 2).
    """
    if layer.down is not None:
        wd = layer.down
    n_exp = layer.expert_idx.shape[0]
    router = layer.router.astype(np.float32)
    # tiny logits: softmax weights ~1/E, ordering kept (scaled by the largest calibration logit)
    spread = layer.metrics.get("router_logit_absmax") or float(np.abs(router).sum(axis=1).max()) or 1.0
    router_scaled = router * (ROUTER_LOGIT_SCALE / spread)
    rng = np.random.default_rng(0)
    gate_inp = (
        rng.standard_normal(d_model).astype(np.float32) * SHARED_GATE_SCALE / np.sqrt(d_model)
    ).astype(np.float32)
    gate_inp[np.abs(gate_inp) < 1e-8] = 1e-8  # never an exact zero: llama.cpp computes sigmoid as silu(x)/x
    ei = layer.expert_idx
    return {
        "router": router_scaled,
        "gate_exps": np.ascontiguousarray(wg[ei]),
        "up_exps": np.ascontiguousarray(wu[ei]),
        "down_exps": np.ascontiguousarray(np.transpose(wd[:, ei], (1, 0, 2)) * float(n_exp)),
        "shexp_gate_inp": gate_inp,
        "gate_shexp": np.ascontiguousarray(wg[layer.shared_idx]),
        "up_shexp": np.ascontiguousarray(wu[layer.shared_idx]),
        "down_shexp": np.ascontiguousarray(wd[:, layer.shared_idx] * 2.0),
    }
