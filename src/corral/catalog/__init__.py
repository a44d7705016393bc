"""Facts with sources, for the planner: model architectures, GPUs, instances and their
prices, quantization formats. Plain data in small typed records (records.py); each entry
names where its numbers come from and how far they were checked.

    records.py     Source, LayerGroup, ModelArch, GpuSpec, Instance, QuantFormat
    models.py      MODELS: sizes, attention layout (GQA, MLA, sliding window), context
    gpus.py        GPUS: memory, bandwidth, bf16/fp8 FLOP/s, NVLink or PCIe
    instances.py   INSTANCES (AWS us-east-1 on-demand) and on_prem() boxes
    quant.py       QUANTS: bits per weight with scale overhead; KV cache dtypes
"""
