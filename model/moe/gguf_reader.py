"""Reading the dense source GGUF: its dimensions, and one layer's FFN dequantized to float32.

The build works layer by layer to bound its memory: only one dense FFN is dequantized at a time, from a
memory-mapped reader of the (quantized) source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SourceShape:
    """The dimensions of a dense source the split is sized from."""

    architecture: str
    n_layers: int
    hidden_size: int
    dense_ffn: int


def source_shape(reader: Any) -> SourceShape:
    """Architecture, layer count, hidden size and FFN width from a ``gguf.GGUFReader``'s header."""
    arch = str(reader.fields["general.architecture"].contents())
    return SourceShape(
        architecture=arch,
        n_layers=int(reader.fields[f"{arch}.block_count"].contents()),
        hidden_size=int(reader.fields[f"{arch}.embedding_length"].contents()),
        dense_ffn=int(reader.fields[f"{arch}.feed_forward_length"].contents()),
    )


def dequant_ffn(reader: Any, il: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer ``il``'s gate, up and down projections as float32 (gate/up [I, d], down [d, I])."""
    import gguf

    out = []
    for part in ("ffn_gate", "ffn_up", "ffn_down"):
        t = next(t for t in reader.tensors if t.name == f"blk.{il}.{part}.weight")
        out.append(np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    return out[0], out[1], out[2]
