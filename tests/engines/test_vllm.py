"""The `vllm serve` command lines of a small, a medium and a large vLLM model."""

from __future__ import annotations

import json

import pytest
import yaml

from corral.config import parse_stack
from corral.engines.vllm import (
    API_KEY_ENV,
    KV_EVENTS_TOPIC,
    VllmLaunch,
    lmcache_settings,
    uses_lmcache,
    vllm_launch,
)
from corral.errors import ConfigError

SMALL = {
    "models": [
        {
            "name": "qwen-0.5b",
            "task": "chat",
            "engine": "vllm",
            "source": "Qwen/Qwen2.5-0.5B-Instruct",
            "replicas": 1,
            "context_length": 8192,
            "gpu": {"type": "l4", "count": 1},
        }
    ]
}

MEDIUM = {
    "router": {"routing": {"policy": "kv"}},
    "models": [
        {
            "name": "llama-70b",
            "aliases": ["llama", "default"],
            "task": "chat",
            "engine": "vllm",
            "source": "meta-llama/Llama-3.3-70B-Instruct",
            "replicas": 2,
            "context_length": 32768,
            "tokenizer": "/models/llama-3.3-vocab.gguf",
            "vllm": {
                "tensor_parallel_size": 2,
                "quantization": "fp8",
                "kv_cache_dtype": "fp8",
                "gpu_memory_utilization": 0.92,
                "max_num_seqs": 128,
                "speculative": {
                    "method": "eagle3",
                    "model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
                    "num_speculative_tokens": 3,
                },
            },
            "gpu": {"type": "h100", "count": 2},
        }
    ],
}

LARGE = {
    "router": {"routing": {"models": {"deepseek": "kv"}}},
    "cache": {
        "ram_bytes": 64 * 1024**3,
        "chunk_tokens": 256,
        "disk": {"path": "kv", "max_bytes": 500 * 1024**3},
        "redis": {},
    },
    "redis": {"url": "redis://kv-redis.corral:6379/0"},
    "models": [
        {
            "name": "deepseek",
            "task": "chat",
            "engine": "vllm",
            "source": "/models/DeepSeek-V3",
            "replicas": 4,
            "prefill_replicas": 2,
            "context_length": 131072,
            "vllm": {
                "tensor_parallel_size": 8,
                "pipeline_parallel_size": 2,
                "kv_cache_dtype": "fp8_e4m3",
                "speculative": {
                    "method": "ngram",
                    "num_speculative_tokens": 4,
                    "prompt_lookup_max": 5,
                    "prompt_lookup_min": 2,
                },
                "kv_events_port": 6000,
                "kv_events_replay_port": None,
            },
            "gpu": {"type": "h200", "count": 16},
        }
    ],
}


def _launch(stack_doc, **kwargs) -> VllmLaunch:
    stack = parse_stack(stack_doc)
    return vllm_launch(stack, stack.models[0], **kwargs)


def test_small_model_is_a_plain_vllm_serve():
    launch = _launch(SMALL)
    assert launch.args == (
        "vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct",
        "--served-model-name", "qwen-0.5b",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--tensor-parallel-size", "1",
        "--pipeline-parallel-size", "1",
        "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
        "--enable-prefix-caching",
    )  # fmt: skip
    assert launch.env == {} and launch.lmcache_config is None


def test_medium_model_tp2_fp8_kv_events_and_eagle():
    launch = _launch(MEDIUM, port=8080)
    assert launch.args == (
        "vllm", "serve", "meta-llama/Llama-3.3-70B-Instruct",
        "--served-model-name", "llama-70b", "llama", "default",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--tensor-parallel-size", "2",
        "--pipeline-parallel-size", "1",
        "--quantization", "fp8",
        "--kv-cache-dtype", "fp8",
        "--max-model-len", "32768",
        "--gpu-memory-utilization", "0.92",
        "--max-num-seqs", "128",
        "--enable-prefix-caching",
        "--block-size", "16",
        "--kv-events-config",
        '{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557",'
        '"replay_endpoint":"tcp://*:5558","topic":"kv-events"}',
        "--speculative-config",
        '{"method":"eagle3","model":"yuhuili/EAGLE3-LLaMA3.3-Instruct-70B","num_speculative_tokens":3}',
    )  # fmt: skip
    assert (
        launch.env == {} and launch.lmcache_config is None
    )  # no disk or Redis tier: vLLM's own cache
    assert API_KEY_ENV not in launch.env and not any("api-key" in arg for arg in launch.args)


@pytest.mark.parametrize(
    ("role", "kv_role"),
    [("both", "kv_both"), ("prefill", "kv_producer"), ("decode", "kv_consumer")],
)
def test_large_model_tp8_pp2_lmcache_redis_and_roles(role, kv_role):
    launch = _launch(LARGE, role=role, lmcache_config_path="/etc/lmcache/config.yaml")
    assert launch.args == (
        "vllm", "serve", "/models/DeepSeek-V3",
        "--served-model-name", "deepseek",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--tensor-parallel-size", "8",
        "--pipeline-parallel-size", "2",
        "--kv-cache-dtype", "fp8_e4m3",
        "--max-model-len", "131072",
        "--gpu-memory-utilization", "0.9",
        "--enable-prefix-caching",
        "--block-size", "16",
        "--kv-events-config",
        '{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:6000","topic":"kv-events"}',
        "--speculative-config",
        '{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":5,"prompt_lookup_min":2}',
        "--kv-transfer-config",
        f'{{"kv_connector":"LMCacheConnectorV1","kv_role":"{kv_role}"}}',
    )  # fmt: skip
    assert launch.env == {"LMCACHE_CONFIG_FILE": "/etc/lmcache/config.yaml", "PYTHONHASHSEED": "0"}
    assert launch.lmcache_config == (
        "chunk_size: 256\n"
        "local_cpu: true\n"
        "max_local_cpu_size: 64.0\n"
        "local_disk: file:///var/cache/corral/kv/\n"
        "max_local_disk_size: 500.0\n"
        "remote_url: redis://kv-redis.corral:6379/0\n"
        "remote_serde: naive\n"
    )


def test_the_renderer_passes_the_in_cluster_redis_and_its_cache_dir():
    launch = _launch(LARGE, redis_url="redis://corral-redis:6379", cache_dir="/data")
    settings = yaml.safe_load(launch.lmcache_config)
    assert settings["remote_url"] == "redis://corral-redis:6379"
    assert settings["local_disk"] == "file:///data/kv/"


def test_cache_section_maps_to_lmcache_keys():
    doc = {
        **SMALL,
        "cache": {
            "ram_bytes": 0,
            "chunk_tokens": 512,
            "disk": {"path": "/mnt/nvme/kv", "max_bytes": 2 * 1024**3},
        },
    }
    stack = parse_stack(doc)
    model = stack.models[0]
    assert uses_lmcache(stack, model)
    assert lmcache_settings(stack, model) == {
        "chunk_size": 512,
        "local_cpu": False,
        "max_local_cpu_size": 1.0,  # a staging buffer only
        "local_disk": "file:///mnt/nvme/kv/",
        "max_local_disk_size": 2.0,
    }
    launch = vllm_launch(stack, model)
    assert (
        json.loads(launch.args[launch.args.index("--kv-transfer-config") + 1])["kv_role"]
        == "kv_both"
    )


def test_lmcache_can_be_forced_on_or_off():
    on = {"models": [{**SMALL["models"][0], "vllm": {"lmcache": True}}]}
    stack = parse_stack(on)
    assert yaml.safe_load(vllm_launch(stack, stack.models[0]).lmcache_config) == {
        "chunk_size": 256,
        "local_cpu": True,
        "max_local_cpu_size": 0.5,
    }
    off = {
        **LARGE,
        "models": [
            {
                **LARGE["models"][0],
                "prefill_replicas": 0,
                "vllm": {"tensor_parallel_size": 8, "pipeline_parallel_size": 2, "lmcache": False},
            }
        ],
    }
    stack = parse_stack(off)
    launch = vllm_launch(stack, stack.models[0])
    assert launch.lmcache_config is None and "--kv-transfer-config" not in launch.args


def test_draft_model_and_embedding_and_no_prefix_caching():
    doc = {
        "models": [
            {
                **SMALL["models"][0],
                "vllm": {
                    "enable_prefix_caching": False,
                    "max_num_seqs": 8,
                    "speculative": {
                        "method": "draft",
                        "model": "Qwen/Qwen2.5-0.5B",
                        "num_speculative_tokens": 5,
                    },
                },
            }
        ]
    }
    args = _launch(doc).args
    assert "--no-enable-prefix-caching" in args and "--enable-prefix-caching" not in args
    assert json.loads(args[args.index("--speculative-config") + 1]) == {
        "method": "draft_model",
        "model": "Qwen/Qwen2.5-0.5B",
        "num_speculative_tokens": 5,
    }
    embed = {
        "router": {"routing": {"policy": "kv"}},
        "models": [
            {
                "name": "bge",
                "task": "embedding",
                "engine": "vllm",
                "source": "BAAI/bge-m3",
                "replicas": 0,
                "endpoints": ["http://10.0.0.9:8000"],
            }
        ],
    }
    args = _launch(embed).args
    assert (
        args[-2:] == ("--runner", "pooling") and "--kv-events-config" not in args
    )  # no KV to route by


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {
                "router": {"routing": {"policy": "kv"}},
                "models": [{**SMALL["models"][0], "vllm": {"enable_prefix_caching": False}}],
            },
            "models (qwen-0.5b).vllm.enable_prefix_caching: the 'kv' routing policy follows vLLM's prefix cache",
        ),
        (
            {
                "router": {"routing": {"policy": "kv"}},
                "prefix": {"block_size": 20},
                "models": SMALL["models"],
            },
            "prefix.block_size: 20 is not a vLLM block size (8, 16, 32, 64, 128)",
        ),
        (
            {"cache": {"redis": {}}, "models": SMALL["models"]},
            "redis.url: model 'qwen-0.5b' runs on vLLM, whose LMCache reaches the shared KV tier at a URL",
        ),
        (
            {
                **LARGE,
                "models": [
                    {
                        **LARGE["models"][0],
                        "vllm": {
                            "tensor_parallel_size": 8,
                            "pipeline_parallel_size": 2,
                            "lmcache": False,
                        },
                    }
                ],
            },
            "models (deepseek).vllm.lmcache: prefill and decode replicas hand the KV over through LMCache",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "task": "chat",
                        "engine": "llamacpp",
                        "source": "smollm2-135m-instruct",
                    }
                ]
            },
            "models (m).engine: 'llamacpp' is not vllm",
        ),
    ],
)
def test_what_vllm_cannot_do_is_a_config_error_naming_the_field(doc, message):
    with pytest.raises(ConfigError) as info:
        _launch(doc)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("speculative", "message"),
    [
        (
            {"method": "ngram", "num_speculative_tokens": 3, "model": "x"},
            "method 'ngram' proposes from the prompt",
        ),
        (
            {"method": "eagle", "num_speculative_tokens": 3},
            "model: method 'eagle' needs the draft model",
        ),
        (
            {"method": "draft", "model": "m", "num_speculative_tokens": 3, "prompt_lookup_max": 4},
            "prompt_lookup_min/max: apply to method 'ngram' only",
        ),
        (
            {
                "method": "ngram",
                "num_speculative_tokens": 3,
                "prompt_lookup_max": 2,
                "prompt_lookup_min": 4,
            },
            "prompt_lookup_min (4) must not exceed prompt_lookup_max (2)",
        ),
        (
            {"method": "medusa", "num_speculative_tokens": 3},
            "vllm.speculative.method: Input should be",
        ),
        (
            {"method": "ngram", "num_speculative_tokens": 0},
            "vllm.speculative.num_speculative_tokens",
        ),
    ],
)
def test_bad_speculative_settings_name_the_field(speculative, message):
    doc = {"models": [{**SMALL["models"][0], "vllm": {"speculative": speculative}}]}
    with pytest.raises(ConfigError) as info:
        parse_stack(doc)
    assert message in str(info.value)
    assert "models[0] (qwen-0.5b).vllm.speculative" in str(info.value)


def test_kv_event_ports_must_differ():
    doc = {
        "models": [
            {**SMALL["models"][0], "vllm": {"kv_events_port": 7000, "kv_events_replay_port": 7000}}
        ]
    }
    with pytest.raises(
        ConfigError, match="kv_events_replay_port \\(7000\\) must differ from kv_events_port"
    ):
        parse_stack(doc)


def test_topic_is_the_one_the_router_subscribes_to():
    from corral.router.vllm_kv_events import DEFAULT_TOPIC

    assert KV_EVENTS_TOPIC == DEFAULT_TOPIC
