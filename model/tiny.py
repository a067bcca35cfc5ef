"""Tiny random-weight configs for every supported transformers MoE family, plus a word tokenizer.

Used by the tests (and handy for debugging hooks) so that router capture and MoE loading are
exercised for each family without downloading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_VOCAB_WORDS = [
    "<unk>",
    "<pad>",
    "</s>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "was",
    "it",
    "and",
    "paris",
    "france",
    "capital",
    "city",
    "river",
    "tower",
    "built",
    "year",
    "question",
    "answer",
    "context",
    "what",
    "who",
    "when",
    "where",
    "which",
    "how",
    "many",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "house",
    "tree",
    "sun",
    "moon",
    "star",
    "water",
    "fire",
    "earth",
    "wind",
    "king",
    "queen",
    "man",
    "woman",
    "child",
    "old",
    "new",
    "big",
    "small",
    "good",
    "bad",
    "first",
    "last",
    "north",
    "south",
    "east",
    "west",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

FAMILY_NAMES = ("qwen2_moe", "qwen3_moe", "olmoe", "mixtral", "granitemoe", "deepseek_v2", "deepseek_v3")


def tiny_config(family: str, *, n_experts: int = 8, top_k: int = 2, vocab_size: int | None = None) -> Any:
    """A 2-layer, 32-wide config of ``family`` with ``n_experts`` experts of 16 neurons."""
    import transformers as tf

    v = vocab_size or len(TINY_VOCAB_WORDS)
    common: dict[str, Any] = dict(
        vocab_size=v,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        num_experts_per_tok=top_k,
        tie_word_embeddings=False,
        pad_token_id=1,
        eos_token_id=2,
        bos_token_id=None,
    )
    if family == "qwen2_moe":
        return tf.Qwen2MoeConfig(
            **common,
            intermediate_size=64,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=32,
            num_experts=n_experts,
            norm_topk_prob=False,
        )
    if family == "qwen3_moe":
        # transformers' dataclass signature omits head_dim, which the config takes (and the model reads) as an extra.
        return tf.Qwen3MoeConfig(  # type: ignore[call-arg]
            **common, head_dim=8, intermediate_size=64, moe_intermediate_size=16, num_experts=n_experts
        )
    if family == "olmoe":
        return tf.OlmoeConfig(**common, intermediate_size=16, num_experts=n_experts)
    if family == "mixtral":
        return tf.MixtralConfig(**common, intermediate_size=16, num_local_experts=n_experts)
    if family == "granitemoe":
        return tf.GraniteMoeConfig(**common, intermediate_size=16, num_local_experts=n_experts)
    if family in ("deepseek_v2", "deepseek_v3"):
        cls = tf.DeepseekV2Config if family == "deepseek_v2" else tf.DeepseekV3Config
        common["num_key_value_heads"] = 4
        extra: dict[str, Any] = dict(
            intermediate_size=64,
            moe_intermediate_size=16,
            n_routed_experts=n_experts,
            n_shared_experts=1,
            first_k_dense_replace=0,
            kv_lora_rank=16,
            q_lora_rank=None,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            n_group=1,
            topk_group=1,
        )
        if family == "deepseek_v2":
            extra["topk_method"] = "greedy"
        return cls(**common, **extra)
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILY_NAMES}")


def tiny_tokenizer() -> Any:
    """A whitespace word-level tokenizer with a chat template (ids match TINY_VOCAB_WORDS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(TINY_VOCAB_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_checkpoint(family: str, out: Path, *, seed: int = 0, **cfg_kw: Any) -> Path:
    """Random-weight checkpoint directory (safetensors + tokenizer) for ``family``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **cfg_kw))
    model.generation_config.eos_token_id = 2
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


def write_tiny_qwen2_gguf(
    out: Path, tokenizer_gguf: Path, *, hidden: int = 64, ffn: int = 160, n_layers: int = 2, seed: int = 0
) -> Path:
    """A random-weight dense ``qwen2`` GGUF (F32) borrowing tokenizer + chat template from another GGUF.

    Small enough to build in a second; used to test the MoEfication writer and llama.cpp's
    qwen2moe semantics end to end (dense equivalence, expert capture) without a real model.
    """
    import gguf
    import numpy as np

    src = gguf.GGUFReader(str(tokenizer_gguf))
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "qwen2")
    for key, fld in src.fields.items():
        if key.startswith("tokenizer."):
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, fld.contents(), vtype, sub_type=sub)
    n_head, n_kv = 4, 2
    hd = hidden // n_head
    w.add_name("sparq tiny qwen2 (random weights)")
    w.add_block_count(n_layers)
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))

    def rnd(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", rnd(n_vocab, hidden, scale=0.5))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", rnd(n_vocab, hidden, scale=0.2))
    for il in range(n_layers):
        p = f"blk.{il}."
        w.add_tensor(p + "attn_norm.weight", (1 + rnd(hidden, scale=0.1)))
        w.add_tensor(p + "attn_q.weight", rnd(hidden, hidden, scale=0.2))
        w.add_tensor(p + "attn_q.bias", rnd(hidden))
        w.add_tensor(p + "attn_k.weight", rnd(n_kv * hd, hidden, scale=0.2))
        w.add_tensor(p + "attn_k.bias", rnd(n_kv * hd))
        w.add_tensor(p + "attn_v.weight", rnd(n_kv * hd, hidden, scale=0.2))
        w.add_tensor(p + "attn_v.bias", rnd(n_kv * hd))
        w.add_tensor(p + "attn_output.weight", rnd(hidden, hidden, scale=0.2))
        w.add_tensor(p + "ffn_norm.weight", (1 + rnd(hidden, scale=0.1)))
        w.add_tensor(p + "ffn_gate.weight", rnd(ffn, hidden, scale=0.3))
        w.add_tensor(p + "ffn_up.weight", rnd(ffn, hidden, scale=0.3))
        w.add_tensor(p + "ffn_down.weight", rnd(hidden, ffn, scale=0.3))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def build_tiny_moe_gguf(
    out_dir: Path,
    source_gguf: Path,
    samples: list[list[dict[str, str]]],
    *,
    calib_tokens: int,
    router_steps: int,
    n_threads: int = 1,
) -> tuple[Path, Path, dict[int, Any]]:
    """A random-weight dense qwen2 GGUF and the qwen2moe GGUF the MoEfication pipeline makes of it
    (8 experts of 16 neurons, a 32-neuron shared expert, top-2, both layers): (dense, moe, split tensors).

    Tests use it to run the real conversion and serving code on a model small enough to build in seconds."""
    import gguf

    from model.moe.capture import capture_ffn_inputs
    from model.moe.gguf_reader import dequant_ffn
    from model.moe.gguf_writer import write_moe_gguf
    from model.moe.layer import moefy_ffn
    from model.moe.split import ExpertLayout
    from model.moe.tensors import expert_tensors

    dense = write_tiny_qwen2_gguf(out_dir / "dense.gguf", source_gguf)
    xs = capture_ffn_inputs(dense, samples, calib_tokens, n_threads=n_threads)
    reader = gguf.GGUFReader(str(dense))
    layout = ExpertLayout(160, 8, 16, 32)
    layers = {}
    for il in range(2):
        wg, wu, wd = dequant_ffn(reader, il)
        split = moefy_ffn(wg, wu, wd, xs[il], layout, top_k=2, router_steps=router_steps, seed=il)
        layers[il] = expert_tensors(wg, wu, wd, split, 64)
    moe = out_dir / "moe.gguf"
    write_moe_gguf(dense, moe, layers, layout, top_k=2)
    return dense, moe, layers
