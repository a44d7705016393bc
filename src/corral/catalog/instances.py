"""AWS GPU instances (us-east-1, on-demand, Linux) and bring-your-own-GPU boxes.

Prices come from skypilot-catalog's AWS table, which reflects the June 2025 P-family price
cut; vCPU and RAM are cross-checked against torchx's named AWS resources (planning.md C3).
An instance without an on-demand price (p5e: Capacity Blocks only) is listed with
``usd_per_hour=None``: it can be planned, not priced.
"""

from __future__ import annotations

from corral.catalog.records import Instance, Mark, Source

SKY = Source("skypilot-org/skypilot-catalog catalogs/v8/aws/vms.csv (us-east-1 on-demand)", "verified", "price")
TORCHX = Source("meta-pytorch/torchx torchx/specs/named_resources_aws.py", "verified", "vCPU, RAM")
SHAPE_FROM_MEMORY = Source("AWS instance-type page (not read here)", "unverified", "vCPU, RAM")


def _aws(name: str, gpu: str, count: int, vcpus: int, ram_gib: int, usd: float | None,
         *sources: Source, notes: str = "") -> Instance:
    return Instance(name=name, provider="aws", gpu=gpu, gpu_count=count, vcpus=vcpus, ram_gib=ram_gib,
                    usd_per_hour=usd, sources=sources, notes=notes)


INSTANCES: tuple[Instance, ...] = (
    _aws("g5.xlarge", "a10g", 1, 4, 16, 1.006, TORCHX,
         Source("factualminds.com (June 2026)", "secondary", "price")),
    _aws("g5.12xlarge", "a10g", 4, 48, 192, 5.672, SKY, TORCHX),
    _aws("g5.48xlarge", "a10g", 8, 192, 768, None, TORCHX,
         Source("on-demand price not retrieved", "unverified", "price")),
    _aws("g6.xlarge", "l4", 1, 4, 16, 0.8048, SKY, TORCHX),
    _aws("g6.8xlarge", "l4", 1, 32, 128, 2.0144, SKY, SHAPE_FROM_MEMORY),
    _aws("g6.12xlarge", "l4", 4, 48, 192, 4.6016, SKY, TORCHX),
    _aws("g6e.xlarge", "l40s", 1, 4, 32, 1.861, SKY, TORCHX),
    _aws("g6e.2xlarge", "l40s", 1, 8, 64, 2.24208, SKY, SHAPE_FROM_MEMORY),
    _aws("g6e.4xlarge", "l40s", 1, 16, 128, 3.00424, SKY, SHAPE_FROM_MEMORY),
    _aws("g6e.12xlarge", "l40s", 4, 48, 384, 10.49264, SKY, TORCHX),
    _aws("g6e.48xlarge", "l40s", 8, 192, 1536, 30.13118, SKY, TORCHX),
    _aws("p4d.24xlarge", "a100-40gb", 8, 96, 1152, 21.957642, SKY, TORCHX),
    _aws("p4de.24xlarge", "a100-80gb", 8, 96, 1152, 27.44705, SKY, TORCHX),
    _aws("p5.4xlarge", "h100", 1, 16, 256, 6.88, SKY, TORCHX),
    _aws("p5.48xlarge", "h100", 8, 192, 2048, 55.04, SKY, TORCHX,
         notes="about $98/h before the June 2025 price cut"),
    _aws("p5e.48xlarge", "h200", 8, 192, 2048, None, TORCHX,
         Source("no on-demand price: sold as EC2 Capacity Blocks", "secondary", "price"),
         notes="Capacity Blocks only; p5en.48xlarge has the same 8x H200 on demand"),
    _aws("p5en.48xlarge", "h200", 8, 192, 2048, 63.296, SKY, TORCHX,
         Source("dstack PR #4110 (Aug 2026)", "secondary", "price")),
    _aws("p6-b200.48xlarge", "b200", 8, 192, 2048, 113.9328, SKY, TORCHX),
)

BY_NAME: dict[str, Instance] = {instance.name: instance for instance in INSTANCES}

ON_PREM_SIZES = (1, 2, 4, 8)


def on_prem(gpu: str, count: int, usd_per_gpu_hour: float | None = None) -> Instance:
    """A box of your own: ``count`` GPUs of one kind, priced only if you give a $/GPU-hour
    (amortized hardware, power and hosting)."""
    price = None if usd_per_gpu_hour is None else usd_per_gpu_hour * count
    mark: Mark = "unverified" if usd_per_gpu_hour is None else "verified"
    return Instance(
        name=f"on-prem {count}x{gpu}", provider="on-prem", gpu=gpu, gpu_count=count, vcpus=None, ram_gib=None,
        usd_per_hour=price,
        sources=(Source("bring your own GPU: $/GPU-hour given with --gpu-hour-usd", mark, "price"),),
    )


def find_instance(name: str) -> Instance | None:
    return BY_NAME.get(name.lower())
