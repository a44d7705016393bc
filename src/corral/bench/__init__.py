"""`corral bench`: a serving benchmark for any OpenAI-compatible server.

    workload.py   what to send: datasets (random, prefix-repetition, multi-round-qa, sharegpt,
                  custom) and arrival times (gamma / Poisson)
    text.py       random text of an exact token length; datasets.py: ShareGPT / JSONL files
    tokens.py     how prompt lengths are counted: the server's /tokenize, or a stated estimate
    runner.py     how it is sent: one aiohttp session; per request only raw (timestamp, bytes) reads
    records.py    raw reads -> per-request results (TTFT, chunk times, usage), after the run
    stats.py      pure metric functions, defined as `vllm bench serve` defines them
    sweep.py      sweeps over rates or concurrency levels and the saturation rule
    benchmark.py  one run or a sweep, end to end (warm-up, run, metrics)
    report.py     the summary table and the JSON result; plots.py: PNG plots and the HTML report
    progress.py   the live view (rich), redrawn from per-request counters
    compare.py    the differences between two JSON results
"""
