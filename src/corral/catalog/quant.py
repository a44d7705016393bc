"""Weight formats: bits per weight *including* their scales, and how vLLM runs them.

Block formats store a scale (and sometimes a zero point or minimum) per group of weights;
that overhead is part of ``bits_per_weight``: e.g. AWQ/GPTQ int4 with group size 128 is
4 bits + a 16-bit scale and a 4-bit zero per 128 weights, ≈ 4.16, and MXFP4 is 4 bits + an
8-bit scale per 32, 4.25. Embeddings and lm_head usually stay 16-bit in int4 checkpoints;
that is not modelled (vllm-wizard rounds int4 up to 0.55 B/param to cover it).
"""

from __future__ import annotations

from corral.catalog.records import QuantFormat, Source

C1 = Source("shared/reference/planning.md C1 (weights row)", "verified")

QUANTS: tuple[QuantFormat, ...] = (
    QuantFormat("bf16", 16, "bf16", None, ("vllm",), (C1,)),
    QuantFormat("fp16", 16, "bf16", None, ("vllm",), (C1,)),
    QuantFormat("fp8", 8, "fp8", "fp8", ("vllm",), (C1,),
                notes="vLLM quantizes a bf16 checkpoint online (per-tensor scales); fp8 tensor cores on "
                      "Ada/Hopper/Blackwell, weight-only (Marlin) on Ampere"),
    QuantFormat("int8", 8, "bf16", None, ("vllm",), (C1,), prequantized=True,
                notes="W8A8 needs an int8 (compressed-tensors) checkpoint"),
    QuantFormat("awq", 4.25, "bf16", "awq", ("vllm",),
                (C1, Source("4 bits + group-128 scales (≈4.1-4.25 bits)", "secondary", "scale overhead")),
                prequantized=True, notes="needs an AWQ checkpoint (e.g. a '-AWQ' repository)"),
    QuantFormat("gptq", 4.25, "bf16", "gptq", ("vllm",),
                (C1, Source("4 bits + group-128 scales (≈4.1-4.25 bits)", "secondary", "scale overhead")),
                prequantized=True, notes="needs a GPTQ checkpoint"),
    QuantFormat("mxfp4", 4.25, "bf16", None, ("vllm",),
                (Source("OCP MX: 4-bit E2M1 + one 8-bit E8M0 scale per 32", "unverified"),),
                prequantized=True, notes="gpt-oss ships its experts in MXFP4"),
    QuantFormat("nvfp4", 4.5, "bf16", None, ("vllm",),
                (Source("NVFP4: 4-bit E2M1 + one fp8 scale per 16", "unverified"),),
                prequantized=True, notes="needs an NVFP4 checkpoint; fp4 tensor cores on Blackwell only"),
    QuantFormat("q4_k_m", 4.9, "bf16", None, ("llamacpp",),
                (Source("llama.cpp: Llama-3-8B Q4_K_M is 4.58 GiB, ≈4.9 bits/weight (planning.md C1)", "verified"),)),
    QuantFormat("q4_1", 5.0, "bf16", None, ("llamacpp",),
                (Source("llama.cpp Q4_1: 32 4-bit weights + fp16 scale + fp16 minimum", "unverified"),)),
    QuantFormat("q8_0", 8.5, "bf16", None, ("llamacpp",),
                (Source("llama.cpp Q8_0: 32 int8 weights + one fp16 scale", "unverified"),)),
)

BY_NAME: dict[str, QuantFormat] = {quant.name: quant for quant in QUANTS}

#: What `--kv-dtype` accepts: ``auto`` is the model's activation dtype (bf16/fp16: 2 bytes).
KV_DTYPE_BYTES: dict[str, float] = {"auto": 2, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_ds_mla": 1}


def find_quant(name: str) -> QuantFormat | None:
    return BY_NAME.get(name.lower())


def vllm_quant_names() -> list[str]:
    return [quant.name for quant in QUANTS if "vllm" in quant.engines]
