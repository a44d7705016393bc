"""`corral up` with a Redis tier and no URL: redis-server starts first, workers use it, it stops last."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import start_stack, stop_stack

from corral.config import load_stack
from corral.supervisor.layout import free_port

pytestmark = pytest.mark.slow

STORY = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, lit the great "
    "lamp, and wrote the weather, the ships and the birds into his logbook. "
) * 4


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_up_starts_redis_for_the_kv_tier_and_stops_it(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(
        "cache: {min_tokens: 32, chunk_tokens: 64, disk: {max_bytes: 67108864}, redis: {}}\n"
        f"redis: {{port: {free_port()}, max_memory_bytes: 67108864}}\n"
        "models:\n"
        "  - {name: smol, task: completion, engine: llamacpp, source: smollm2-135m-instruct,"
        " threads: 2, context_length: 1024}\n"
    )
    stack = start_stack(stack_file, tmp_path)
    try:
        redis_pids = [pid for pid, cmd in stack.children().items() if "redis-server" in cmd]
        assert len(redis_pids) == 1
        resolved = load_stack(stack.run_dir / "stack.resolved.yaml")
        assert resolved.redis.url is not None and resolved.redis.url.startswith("redis://127.0.0.1:")
        reply = get_json(f"{stack.base_url}/v1/completions",
                         {"model": "smol", "prompt": STORY, "max_tokens": 4, "temperature": 0})
        assert reply["usage"]["prompt_tokens"] > 64
        (worker,) = resolved.model("smol").endpoints
        deadline = time.monotonic() + 60
        while True:
            tiers = get_json(f"{worker}/v1/kv/blocks")["store"]["tiers"]
            if tiers["redis"]["stored"] and tiers["disk"]["stored"]:
                break
            assert time.monotonic() < deadline, tiers
            time.sleep(0.2)
        assert list((stack.run_dir / "kv-cache" / "smol").glob("*.kv"))
    finally:
        code = stop_stack(stack)
    assert code == 0, stack.output()
    assert not Path(f"/proc/{redis_pids[0]}").exists() or _is_zombie(redis_pids[0])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

