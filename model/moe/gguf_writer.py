"""Writing the MoE as a standard qwen2moe GGUF, quantizing it, and re-targeting its served top-k.

A standard file (not a sparq format) means llama.cpp, ik_llama.cpp and the user's own tools run it as any
Qwen2-MoE checkpoint. Attention and embedding tensors are copied byte for byte from the source; the MoE
tensors are written F16 (routers F32) and then quantized by llama.cpp's own quantizer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from model.base import ModelError
from model.moe.split import ExpertLayout

FTYPE_Q4_K_M = 15  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M


def _copy_kv(reader: Any, writer: Any, src_arch: str, dst_arch: str) -> None:
    """Copy the source's metadata, renaming ``<src_arch>.*`` keys to ``<dst_arch>.*``."""
    import gguf

    skip = {"general.architecture", "general.file_type", "general.name"}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        new_key = dst_arch + key[len(src_arch) :] if key.startswith(src_arch + ".") else key
        vtype = fld.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(new_key, fld.contents(), vtype, sub_type=fld.types[-1])
        else:
            writer.add_key_value(new_key, fld.contents(), vtype)


def write_moe_gguf(
    source: Path,
    out_f16: Path,
    layers: dict[int, dict[str, np.ndarray]],
    layout: ExpertLayout,
    top_k: int,
    name_suffix: str = " (sparq MoEfied)",
) -> None:
    """Write a qwen2moe GGUF: non-FFN tensors copied raw, MoE tensors F16 (router F32)."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    src_arch = str(reader.fields["general.architecture"].contents())
    if src_arch != "qwen2":
        raise ModelError(f"MoEfication to qwen2moe needs a qwen2 source, got {src_arch!r}")
    w = gguf.GGUFWriter(str(out_f16), "qwen2moe")
    _copy_kv(reader, w, src_arch, "qwen2moe")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_key_value(
        "general.name", str(reader.fields["general.name"].contents()) + name_suffix, gguf.GGUFValueType.STRING
    )
    w.add_uint32("qwen2moe.expert_count", layout.n_experts)
    w.add_uint32("qwen2moe.expert_used_count", top_k)
    w.add_uint32("qwen2moe.expert_feed_forward_length", layout.expert_size)
    w.add_uint32("qwen2moe.expert_shared_feed_forward_length", layout.shared_size)
    names = {t.name for t in reader.tensors}
    if "output.weight" not in names:  # llama.cpp's qwen2moe requires an explicit head
        emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
        w.add_tensor("output.weight", np.array(emb.data), raw_dtype=emb.tensor_type)
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in ("ffn_gate", "ffn_up", "ffn_down"):
            if parts[2] == "ffn_gate":
                il = int(parts[1])
                lt = layers[il]
                p = f"blk.{il}."
                w.add_tensor(p + "ffn_gate_inp.weight", lt["router"].astype(np.float32))
                w.add_tensor(p + "ffn_gate_exps.weight", lt["gate_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_up_exps.weight", lt["up_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_down_exps.weight", lt["down_exps"].astype(np.float16))
                w.add_tensor(p + "ffn_gate_inp_shexp.weight", lt["shexp_gate_inp"].astype(np.float32))
                w.add_tensor(p + "ffn_gate_shexp.weight", lt["gate_shexp"].astype(np.float16))
                w.add_tensor(p + "ffn_up_shexp.weight", lt["up_shexp"].astype(np.float16))
                w.add_tensor(p + "ffn_down_shexp.weight", lt["down_shexp"].astype(np.float16))
            continue
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, np.array(t.data))
        else:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_gguf(src: Path, dst: Path, ftype: int = FTYPE_Q4_K_M, n_threads: int | None = None) -> None:
    """llama.cpp's quantizer (Q4_K_M by default); tensors already in the target type are copied."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = n_threads or max(os.cpu_count() or 1, 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ModelError(f"llama.cpp quantization of {src} failed (rc={rc})")


def set_expert_used_count(gguf_path: Path, top_k: int) -> None:
    """Patch the served experts-per-token (``qwen2moe.expert_used_count``, 4 bytes) in place."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path), mode="r+")
    fld = reader.fields["qwen2moe.expert_used_count"]
    fld.parts[fld.data[0]][0] = top_k
    reader.data.flush()
    del reader
