"""Capacity and cost planning for vLLM deployments (`corral plan`; docs/plan.md).

    memory.py      weights, KV bytes per token and per sequence as vLLM allocates them
                   (GQA, MLA, sliding window), vLLM's memory budget, sequences that fit, TP needed
    throughput.py  decode from memory bandwidth and batch, prefill from compute, TP all-reduces,
                   one replica's capacity under a TPOT target
    cost.py        $/month (730 h), $ per 1M tokens, reserved/spot multipliers
    recommend.py   Workload, PlanRequest, Option: every instance evaluated at its best TP, ranked
    advice.py      Plan: the ranked options and the reasoning behind the top pick
    scenarios.py   the seed guide's small/medium/large scenarios and the gap to its figures
    emit.py        the top pick as a stack file, validated by corral.config
    local.py       what fits this machine on CPU
    report.py      rich tables and JSON
    units.py       token counts such as 8k
"""
