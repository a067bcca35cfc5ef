"""MoEfication of a dense transformers Qwen2 model into a ``Qwen2MoeForCausalLM``.

Same layers (:func:`model.moe.layer.moefy_ffn`) and tensors as the GGUF build; used for the transformers
backend and for the dense-equivalence check (all experts active == dense logits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.base import UnsupportedArchitecture
from model.moe.layer import moefy_ffn
from model.moe.split import ExpertLayout
from model.moe.tensors import expert_tensors


def capture_mlp_inputs(model: Any, input_ids: Any) -> dict[int, np.ndarray]:
    """Inputs of every decoder layer's MLP (post-attention RMSNorm output), [N, d] per layer."""
    import torch

    caught: dict[int, list[np.ndarray]] = {}
    handles = []
    for il, layer in enumerate(model.model.layers):

        def pre(_m: Any, args: tuple[Any, ...], il: int = il) -> None:
            caught.setdefault(il, []).append(args[0].detach().reshape(-1, args[0].shape[-1]).float().numpy())

        handles.append(layer.mlp.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        for h in handles:
            h.remove()
    return {il: np.concatenate(v) for il, v in caught.items()}


def moefy_qwen2_model(
    dense: Any, calib_ids: Any, layout: ExpertLayout, *, top_k: int, router_steps: int = 200, seed: int = 0
) -> Any:
    """A Qwen2-MoE model whose experts are a split of ``dense``'s FFNs (attention copied)."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    cfg = dense.config
    if cfg.model_type != "qwen2":
        raise UnsupportedArchitecture(f"MoEfication to Qwen2-MoE needs a qwen2 model, got {cfg.model_type!r}")
    xs = capture_mlp_inputs(dense, calib_ids)
    moe_cfg = Qwen2MoeConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters=getattr(cfg, "rope_parameters", None),
        tie_word_embeddings=cfg.tie_word_embeddings,
        num_experts=layout.n_experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=layout.expert_size,
        shared_expert_intermediate_size=layout.shared_size,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        qkv_bias=True,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=getattr(cfg, "pad_token_id", None),
    )
    moe = Qwen2MoeForCausalLM(moe_cfg).eval()
    sd = {k: v for k, v in dense.state_dict().items() if ".mlp." not in k}
    missing, _unexpected = moe.load_state_dict(sd, strict=False)
    layers_meta = []
    for il, layer in enumerate(dense.model.layers):
        wg = layer.mlp.gate_proj.weight.detach().float().numpy()
        wu = layer.mlp.up_proj.weight.detach().float().numpy()
        wd = layer.mlp.down_proj.weight.detach().float().numpy()
        split = moefy_ffn(wg, wu, wd, xs[il], layout, top_k=top_k, router_steps=router_steps, seed=seed + il)
        t = expert_tensors(wg, wu, wd, split, cfg.hidden_size)
        mlp = moe.model.layers[il].mlp
        with torch.no_grad():
            mlp.gate.weight.copy_(torch.from_numpy(t["router"]))
            mlp.experts.gate_up_proj.copy_(
                torch.from_numpy(np.concatenate([t["gate_exps"], t["up_exps"]], axis=1))
            )
            mlp.experts.down_proj.copy_(torch.from_numpy(t["down_exps"]))
            mlp.shared_expert.gate_proj.weight.copy_(torch.from_numpy(t["gate_shexp"]))
            mlp.shared_expert.up_proj.weight.copy_(torch.from_numpy(t["up_shexp"]))
            mlp.shared_expert.down_proj.weight.copy_(torch.from_numpy(t["down_shexp"]))
            mlp.shared_expert_gate.weight.copy_(torch.from_numpy(t["shexp_gate_inp"][None, :]))
        layers_meta.append(split.metrics)
    still = [
        k for k in missing if ".mlp." not in k and not (k == "lm_head.weight" and cfg.tie_word_embeddings)
    ]
    if still:
        raise RuntimeError(f"weights not transferred to the MoE model: {still[:5]}")
    moe.sparq_calibration = layers_meta
    return moe
