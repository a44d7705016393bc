"""`--local`: RAM and cores of this machine against the shipped CPU models."""

from __future__ import annotations

import pytest

from corral.plan.local import SHIPPED, WORKER_RUNTIME_BYTES, fit, larger_models, read_machine

MEMINFO = """MemTotal:       24576000 kB
MemFree:         1000000 kB
MemAvailable:   20480000 kB
Buffers:          100000 kB
"""


def test_read_machine():
    machine = read_machine(MEMINFO, 2)
    assert machine.ram_total_bytes == 24_576_000 * 1024
    assert machine.ram_available_bytes == 20_480_000 * 1024
    assert machine.cpus == 2
    with pytest.raises(ValueError, match="MemTotal"):
        read_machine("nothing here", 2)


def test_smollm2_fit_by_hand():
    machine = read_machine(MEMINFO, 2)
    smollm2 = next(item for item in SHIPPED if item.name == "smollm2-135m-instruct")
    result = fit(smollm2, machine, 2048)
    # f16 KV: 30 layers x 2 x 3 KV heads x 64 x 2 bytes = 23,040 B/token (cpu-engines.md: ~23 KB)
    assert result.kv_bytes == 30 * 2 * 3 * 64 * 2 * 2048
    assert result.replica_bytes == 98_000_000 + result.kv_bytes + WORKER_RUNTIME_BYTES
    assert result.replicas_by_ram == int(20_480_000 * 1024 * 0.8 // result.replica_bytes)
    assert result.replicas_by_cores == 2
    assert result.replicas == 2


def test_larger_models_as_q4_k_m():
    machine = read_machine(MEMINFO, 2)
    larger = {item.name: item for item in larger_models(machine, 8192)}
    llama = larger["llama-3.1-8b"]
    assert llama.weights_bytes == pytest.approx(8.03e9 * 4.9 / 8, abs=1)  # 4.58 GiB
    assert llama.fits
    assert not larger["llama-3.1-70b"].fits
    assert "deepseek-r1" not in larger  # far beyond any CPU box
    assert 0 < llama.decode_tokens_per_s < larger["qwen3-30b-a3b"].decode_tokens_per_s  # MoE reads less
