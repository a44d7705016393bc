"""GPUs: memory, memory bandwidth, dense bf16/fp8 throughput, and how they talk to each other.

``memory_bytes`` is what the driver reports (nvidia-smi / ``torch.cuda.mem_get_info``),
which vLLM multiplies by ``gpu_memory_utilization``; where only the marketing size was
found, the entry says so. FLOP/s are dense (no 2:4 sparsity): datasheets often print
the sparse figure, twice as large. ``link_bytes_s`` is one direction of one GPU's link.
"""

from __future__ import annotations

from corral.catalog.records import GIB, MIB, GpuSpec, Source

PCIE4_X16 = 32e9  # bytes/s per direction (64 GB/s bidirectional)

GPUS: tuple[GpuSpec, ...] = (
    GpuSpec(
        name="a10g", label="A10G 24GB", memory_bytes=22888 * MIB,
        memory_bandwidth_bytes_s=600e9, bf16_flops=70e12, fp8_flops=None,
        interconnect="pcie", link_bytes_s=PCIE4_X16,
        sources=(Source("shared/reference/planning.md C3 (g5.xlarge: 22,888 MiB)", "secondary", "memory"),
                 Source("https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/", "secondary",
                        "600 GB/s, PCIe"),
                 Source("A10G tensor throughput (A10 datasheet: 125 TFLOPS; A10G lower)", "unverified", "bf16")),
    ),
    GpuSpec(
        name="l4", label="L4 24GB", memory_bytes=23034 * MIB,
        memory_bandwidth_bytes_s=300e9, bf16_flops=121e12, fp8_flops=242.5e12,
        interconnect="pcie", link_bytes_s=PCIE4_X16,
        sources=(Source("https://grokipedia.com/page/NVIDIA_L4_vs_L40S (300 GB/s; 242 FP16, 485 FP8 with sparsity)",
                        "secondary", "bandwidth, throughput"),
                 Source("usable memory 23,034 MiB of 24 GB", "unverified", "memory")),
    ),
    GpuSpec(
        name="l40s", label="L40S 48GB", memory_bytes=45776 * MIB,
        memory_bandwidth_bytes_s=864e9, bf16_flops=362.05e12, fp8_flops=733e12,
        interconnect="pcie", link_bytes_s=PCIE4_X16,
        sources=(Source("shared/reference/planning.md C3 (g6e.xlarge: 45,776 MiB)", "secondary", "memory"),
                 Source("L40S datasheet copy https://www.mullet.se/product.html?product_id=355414", "secondary",
                        "864 GB/s, BF16 362.05 / FP8 733 dense, PCIe Gen4 x16"),
                 Source("https://www.itcreations.com/nvidia-gpu/nvidia-l40s-gpu-accelerator: NVLink is not supported",
                        "secondary", "interconnect")),
    ),
    GpuSpec(
        name="a100-40gb", label="A100 SXM 40GB", memory_bytes=40960 * MIB,
        memory_bandwidth_bytes_s=1555e9, bf16_flops=312e12, fp8_flops=None,
        interconnect="nvlink", link_bytes_s=300e9,
        sources=(Source("https://www.yobitel.com/knowledge-base/nvidia-a100 (40 GB at 1.55 TB/s, 312 BF16 dense)",
                        "secondary"),
                 Source("https://support.denvrdata.com/portal/en/kb/articles/why-a100 (NVLink 600 GB/s)",
                        "secondary", "interconnect")),
    ),
    GpuSpec(
        name="a100-80gb", label="A100 SXM 80GB", memory_bytes=81920 * MIB,
        memory_bandwidth_bytes_s=2039e9, bf16_flops=312e12, fp8_flops=None,
        interconnect="nvlink", link_bytes_s=300e9,
        sources=(Source("https://www.yobitel.com/knowledge-base/nvidia-a100 (80 GB HBM2e at 2.0 TB/s)", "secondary"),),
    ),
    GpuSpec(
        name="h100", label="H100 SXM 80GB", memory_bytes=81559 * MIB,
        memory_bandwidth_bytes_s=3.35e12, bf16_flops=989.4e12, fp8_flops=1978.9e12,
        interconnect="nvlink", link_bytes_s=450e9,
        sources=(Source("https://glennklockwood.com/garden/processors/h100 (3.35 TB/s, BF16 989.4, FP8 1978.9 "
                        "dense, NVLink 900 GB/s)", "secondary"),
                 Source("usable memory 81,559 MiB of 80 GB", "unverified", "memory")),
    ),
    GpuSpec(
        name="h200", label="H200 SXM 141GB", memory_bytes=143771 * MIB,
        memory_bandwidth_bytes_s=4.8e12, bf16_flops=989.4e12, fp8_flops=1978.9e12,
        interconnect="nvlink", link_bytes_s=450e9,
        sources=(Source("https://www.saulelectric.com/nvidia-h200.html (141 GB HBM3e, 4.8 TB/s, NVLink 900 GB/s)",
                        "secondary"),
                 Source("usable memory 143,771 MiB of 141 GB; compute as H100", "unverified", "memory")),
    ),
    GpuSpec(
        name="b200", label="B200 180GB", memory_bytes=179 * GIB,
        memory_bandwidth_bytes_s=8e12, bf16_flops=2.25e15, fp8_flops=4.5e15,
        interconnect="nvlink", link_bytes_s=900e9,
        sources=(Source("shared/reference/planning.md C3 (~179 GiB)", "secondary", "memory"),
                 Source("https://glennklockwood.com/garden/processors/B200 (HGX 1,000 W: BF16 2,250 / FP8 4,500 "
                        "dense; 8 TB/s)", "secondary"),
                 Source("https://docs.vultr.com/inference-cookbook/cuda/getting-started/hardware-overview "
                        "(NVLink 5, 1.8 TB/s)", "secondary", "interconnect")),
    ),
)

BY_NAME: dict[str, GpuSpec] = {gpu.name: gpu for gpu in GPUS}


def find_gpu(name: str) -> GpuSpec | None:
    return BY_NAME.get(name.lower())


def gpu_names() -> list[str]:
    return [gpu.name for gpu in GPUS]
