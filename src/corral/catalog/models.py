"""Model architectures: the numbers from each model's ``config.json`` that size its weights
and its KV cache, with where each came from.

No Hugging Face ``config.json`` could be read directly while this was written; the
sources are copies (LMCache's model table, google/gemma_pytorch, training scripts that
restate the config, vLLM's config classes). Marks follow planning.md: check ◐/❌ entries
against the model's own ``config.json`` before relying on them.
"""

from __future__ import annotations

from corral.catalog.records import GIB, LayerGroup, ModelArch, Source

LMCACHE = "LMCache/LMCache docs/source/_static/modelconfig.json"
GEMMA_PYTORCH = "google/gemma_pytorch gemma/config.py @014acb7 (Gemma 3: attn_types cycle 5 LOCAL_SLIDING : 1 GLOBAL)"
SLIME = "zyzshishui/slime scripts/models/"
GPT_OSS_CONFIG = "vLLM / transformers GptOssConfig copies (layer_types alternate sliding_attention, full_attention)"
PLANNING = "shared/reference/planning.md C2"


def _gqa(layers: int, kv_heads: int, head_dim: int) -> tuple[LayerGroup, ...]:
    return (LayerGroup(layers, "full", kv_heads, head_dim),)


def _gemma3(layers: int, kv_heads: int, head_dim: int, window: int) -> tuple[LayerGroup, ...]:
    """Gemma 3: layer i is global when (i + 1) % 6 == 0, sliding otherwise."""
    full = layers // 6
    return (
        LayerGroup(layers - full, "sliding", kv_heads, head_dim, window),
        LayerGroup(full, "full", kv_heads, head_dim),
    )


def _alternating(layers: int, kv_heads: int, head_dim: int, window: int) -> tuple[LayerGroup, ...]:
    """gpt-oss: sliding and full attention alternate, half the layers each."""
    return (
        LayerGroup(layers // 2, "sliding", kv_heads, head_dim, window),
        LayerGroup(layers - layers // 2, "full", kv_heads, head_dim),
    )


def _mla(layers: int, kv_lora_rank: int = 512, qk_rope_head_dim: int = 64) -> tuple[LayerGroup, ...]:
    """DeepSeek-V3 MLA: vLLM caches one latent of kv_lora_rank + qk_rope_head_dim per token and layer."""
    return (LayerGroup(layers, "mla", 1, kv_lora_rank + qk_rope_head_dim),)


MODELS: tuple[ModelArch, ...] = (
    # --- small (the seed's 7-8B chatbot tier) -------------------------------------------
    ModelArch(
        name="llama-3.1-8b", hf_repo="meta-llama/Llama-3.1-8B-Instruct", task="chat",
        params=8.03e9, active_params=8.03e9, hidden_size=4096, heads=32,
        attention=_gqa(32, 8, 128), max_context=131072, native_dtype="bf16",
        aliases=("llama3-8b", "llama-3-8b"),
        sources=(Source(LMCACHE, "verified", "layers, hidden, heads, KV heads, head dim"),
                 Source("model card: 8B parameters, 128k context", "secondary", "params, context")),
    ),
    ModelArch(
        name="mistral-7b-v0.3", hf_repo="mistralai/Mistral-7B-Instruct-v0.3", task="chat",
        params=7.25e9, active_params=7.25e9, hidden_size=4096, heads=32,
        attention=_gqa(32, 8, 128), max_context=32768, native_dtype="bf16",
        aliases=("mistral-7b",),
        sources=(Source("Mistral 7B v0.2 config copies", "secondary", "shape, context (no sliding window from v0.2)"),
                 Source("parameter count ~7.2B", "unverified", "params")),
    ),
    ModelArch(
        name="qwen2.5-7b", hf_repo="Qwen/Qwen2.5-7B-Instruct", task="chat",
        params=7.61e9, active_params=7.61e9, hidden_size=3584, heads=28,
        attention=_gqa(28, 4, 128), max_context=32768, native_dtype="bf16",
        aliases=("qwen-7b",),
        notes="32,768 in config.json; 131,072 with YaRN rope scaling",
        sources=(Source(LMCACHE, "verified"),
                 Source("model card copy (ZHUI/paddlenlp_model_readme)", "secondary", "context")),
    ),
    ModelArch(
        name="qwen3-8b", hf_repo="Qwen/Qwen3-8B", task="chat",
        params=8.2e9, active_params=8.2e9, hidden_size=4096, heads=32,
        attention=_gqa(36, 8, 128), max_context=32768, native_dtype="bf16",
        sources=(Source(SLIME + "qwen3-8B.sh", "secondary", "shape"),
                 Source("model card: 8.2B, 32k native context", "unverified", "params, context")),
    ),
    # --- medium (the seed's ~70B knowledge-base tier) -------------------------------------
    ModelArch(
        name="llama-3.1-70b", hf_repo="meta-llama/Llama-3.1-70B-Instruct", task="chat",
        params=70.6e9, active_params=70.6e9, hidden_size=8192, heads=64,
        attention=_gqa(80, 8, 128), max_context=131072, native_dtype="bf16",
        aliases=("llama-3.3-70b", "llama3-70b", "llama-3-70b"),
        sources=(Source(LMCACHE, "verified", "shape"),
                 Source("model card: 70B, 128k context", "secondary", "params, context")),
    ),
    ModelArch(
        name="qwen2.5-72b", hf_repo="Qwen/Qwen2.5-72B-Instruct", task="chat",
        params=72.7e9, active_params=72.7e9, hidden_size=8192, heads=64,
        attention=_gqa(80, 8, 128), max_context=32768, native_dtype="bf16",
        aliases=("qwen-72b",),
        notes="32,768 in config.json; 131,072 with YaRN rope scaling",
        sources=(Source("model card and config copies", "secondary"),),
    ),
    ModelArch(
        name="qwen3-32b", hf_repo="Qwen/Qwen3-32B", task="chat",
        params=32.8e9, active_params=32.8e9, hidden_size=5120, heads=64,
        attention=_gqa(64, 8, 128), max_context=32768, native_dtype="bf16",
        sources=(Source(SLIME + "qwen3-32B.sh", "secondary", "shape"),
                 Source("model card: 32.8B, 32k native context", "unverified", "params, context")),
    ),
    ModelArch(
        name="mixtral-8x7b", hf_repo="mistralai/Mixtral-8x7B-Instruct-v0.1", task="chat",
        params=46.7e9, active_params=12.9e9, hidden_size=4096, heads=32,
        attention=_gqa(32, 8, 128), max_context=32768, native_dtype="bf16",
        experts=8, experts_per_token=2, aliases=("mixtral",),
        sources=(Source("AlexsJones/llmfit docs/how-it-works.md", "verified", "params"),
                 Source("config copies", "secondary", "shape, context")),
    ),
    ModelArch(
        name="qwen3-30b-a3b", hf_repo="Qwen/Qwen3-30B-A3B", task="chat",
        params=30.5e9, active_params=3.3e9, hidden_size=2048, heads=32,
        attention=_gqa(48, 4, 128), max_context=32768, native_dtype="bf16",
        experts=128, experts_per_token=8,
        sources=(Source(SLIME + "qwen3-30B-A3B.sh", "secondary", "shape, experts"),
                 Source("model card: 30.5B total / 3.3B active", "unverified", "params, context")),
    ),
    ModelArch(
        name="gpt-oss-20b", hf_repo="openai/gpt-oss-20b", task="chat",
        params=20.9e9, active_params=3.6e9, hidden_size=2880, heads=64,
        attention=_alternating(24, 8, 64, 128), max_context=131072, native_dtype="mxfp4",
        experts=32, experts_per_token=4, native_weight_bytes=int(12.8 * GIB),
        notes="MXFP4 experts, bf16 attention; the checkpoint is 12.8 GiB",
        sources=(Source(GPT_OSS_CONFIG, "secondary", "shape, experts, window"),
                 Source(PLANNING, "secondary", "params, checkpoint size")),
    ),
    # --- large (the seed's 100B+ tier) ----------------------------------------------------
    ModelArch(
        name="gpt-oss-120b", hf_repo="openai/gpt-oss-120b", task="chat",
        params=116.8e9, active_params=5.1e9, hidden_size=2880, heads=64,
        attention=_alternating(36, 8, 64, 128), max_context=131072, native_dtype="mxfp4",
        experts=128, experts_per_token=4, native_weight_bytes=int(60.8 * GIB),
        notes="MXFP4 experts, bf16 attention; the checkpoint is 60.8 GiB",
        sources=(Source(GPT_OSS_CONFIG, "secondary", "shape, experts, window"),
                 Source(PLANNING, "secondary", "params, checkpoint size")),
    ),
    ModelArch(
        name="deepseek-r1", hf_repo="deepseek-ai/DeepSeek-R1", task="chat",
        params=671e9, active_params=37e9, hidden_size=7168, heads=128,
        attention=_mla(61), max_context=163840, native_dtype="fp8",
        experts=256, experts_per_token=8, aliases=("deepseek-v3", "deepseek-r1-0528"),
        notes="fp8 block-quantized weights; the 14B MTP module loads only for speculative decoding",
        sources=(Source(LMCACHE, "verified", "layers, MLA latent"),
                 Source(SLIME + "deepseek-v3.sh", "secondary", "hidden, heads, experts, top-8"),
                 Source("model card mirror: 671B / 37B, 128K (163,840 in config)", "secondary", "params, context")),
    ),
    ModelArch(
        name="mistral-large-3", hf_repo="mistralai/Mistral-Large-3-675B-Instruct-2512", task="chat",
        params=675e9, active_params=41e9, hidden_size=7168, heads=128,
        attention=_mla(61), max_context=262144, native_dtype="fp8",
        experts=256, experts_per_token=8,
        notes="shape assumed equal to DeepSeek-V3 (vLLM's MistralLarge3ForCausalLM subclasses DeepseekV3ForCausalLM)",
        sources=(Source("vllm-project/vllm MistralLarge3ForCausalLM(DeepseekV3ForCausalLM)", "verified", "MLA"),
                 Source("OpenRouter listing: 675B, 262,144 context", "secondary", "params, context"),
                 Source("layers, hidden, heads, experts, fp8 checkpoint assumed from DeepSeek-V3", "unverified")),
    ),
    ModelArch(
        name="mistral-large-2", hf_repo="mistralai/Mistral-Large-Instruct-2407", task="chat",
        params=123e9, active_params=123e9, hidden_size=12288, heads=96,
        attention=_gqa(88, 8, 128), max_context=131072, native_dtype="bf16",
        sources=(Source(LMCACHE, "verified", "shape"),
                 Source("123B, 131,072 context", "unverified", "params, context")),
    ),
    # --- Gemma 3: 5 sliding-window layers to 1 global ---------------------------------------
    ModelArch(
        name="gemma-3-270m", hf_repo="google/gemma-3-270m", task="completion",
        params=0.27e9, active_params=0.27e9, hidden_size=640, heads=4,
        attention=_gemma3(18, 1, 256, 512), max_context=32768, native_dtype="bf16",
        aliases=("gemma3-270m",),
        sources=(Source("gemma-3-270m code copies", "secondary"),),
    ),
    ModelArch(
        name="gemma-3-1b", hf_repo="google/gemma-3-1b-it", task="chat",
        params=1.0e9, active_params=1.0e9, hidden_size=1152, heads=4,
        attention=_gemma3(26, 1, 256, 512), max_context=32768, native_dtype="bf16",
        sources=(Source(GEMMA_PYTORCH, "verified"),),
    ),
    ModelArch(
        name="gemma-3-4b", hf_repo="google/gemma-3-4b-it", task="chat",
        params=4.3e9, active_params=4.3e9, hidden_size=2560, heads=8,
        attention=_gemma3(34, 4, 256, 1024), max_context=131072, native_dtype="bf16",
        sources=(Source(GEMMA_PYTORCH, "verified", "shape, window"),
                 Source("model card: 128K context; 4.3B with the vision encoder", "secondary", "params, context")),
    ),
    ModelArch(
        name="gemma-3-12b", hf_repo="google/gemma-3-12b-it", task="chat",
        params=12.2e9, active_params=12.2e9, hidden_size=3840, heads=16,
        attention=_gemma3(48, 8, 256, 1024), max_context=131072, native_dtype="bf16",
        sources=(Source(GEMMA_PYTORCH, "verified", "shape, window, context"),
                 Source("model card: 12B", "secondary", "params")),
    ),
    ModelArch(
        name="gemma-3-27b", hf_repo="google/gemma-3-27b-it", task="chat",
        params=27.4e9, active_params=27.4e9, hidden_size=5376, heads=32,
        attention=_gemma3(62, 16, 128, 1024), max_context=131072, native_dtype="bf16",
        sources=(Source(GEMMA_PYTORCH, "verified", "shape, window, context"),
                 Source("model card: 27B", "secondary", "params")),
    ),
    # --- what the default stack ships (CPU, llama.cpp / onnxruntime) ----------------------
    ModelArch(
        name="smollm2-135m-instruct", hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct", task="chat",
        params=0.135e9, active_params=0.135e9, hidden_size=576, heads=9,
        attention=_gqa(30, 3, 64), max_context=8192, native_dtype="bf16",
        aliases=("smollm2",),
        sources=(Source("shared/reference/cpu-engines.md (GGUF metadata, measured)", "verified", "layers, KV heads, head dim"),
                 Source("8,192 context, hidden 576, 9 heads", "unverified", "context, hidden, heads")),
    ),
    # --- encoders: no KV cache; they need little GPU ----------------------------------------
    ModelArch(
        name="minilm-l6-v2", hf_repo="sentence-transformers/all-MiniLM-L6-v2", task="embedding",
        params=22.7e6, active_params=22.7e6, hidden_size=384, heads=12,
        attention=(), encoder_layers=6, max_context=256, native_dtype="fp16",
        aliases=("all-minilm-l6-v2",),
        sources=(Source(PLANNING, "secondary"),),
    ),
    ModelArch(
        name="bge-m3", hf_repo="BAAI/bge-m3", task="embedding",
        params=568e6, active_params=568e6, hidden_size=1024, heads=16,
        attention=(), encoder_layers=24, max_context=8192, native_dtype="fp16",
        sources=(Source("model card mirror: 1024 dimensions, 8192 tokens", "verified", "hidden, context"),
                 Source("XLM-R large backbone: 568M, 24 layers, 16 heads", "unverified", "params, layers, heads")),
    ),
    ModelArch(
        name="bge-reranker-v2-m3", hf_repo="BAAI/bge-reranker-v2-m3", task="rerank",
        params=568e6, active_params=568e6, hidden_size=1024, heads=16,
        attention=(), encoder_layers=24, max_context=8192, native_dtype="fp16",
        sources=(Source("model card mirror", "secondary"),
                 Source("same backbone as bge-m3", "unverified", "params, layers, heads, context")),
    ),
)

BY_NAME: dict[str, ModelArch] = {key: model for model in MODELS for key in (model.name, *model.aliases)}


def find_model(name: str) -> ModelArch | None:
    """A model by name or alias, case-insensitive."""
    return BY_NAME.get(name.lower())


def model_names() -> list[str]:
    return [model.name for model in MODELS]
