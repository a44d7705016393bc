"""`corral up` starts redis-server when the stack uses Redis without a URL, and hands out its URL."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.config import load_stack, parse_stack
from corral.errors import ConfigError
from corral.supervisor.layout import free_port, plan_stack
from corral.supervisor.process import ManagedProcess
from corral.supervisor.supervisor import is_ready

MODEL = {"name": "chat", "task": "chat", "engine": "llamacpp", "source": "smollm2-135m-instruct"}


def ports() -> Callable[[str], int]:
    numbers = iter(range(21000, 21100))
    return lambda host: next(numbers)


def installed(name: str) -> str | None:
    return f"/usr/bin/{name}"


def missing(name: str) -> str | None:
    return None


def test_a_redis_tier_without_a_url_gets_a_redis_server_on_loopback(tmp_path: Path) -> None:
    stack = parse_stack({"cache": {"redis": {}}, "redis": {"port": 0, "max_memory_bytes": 64 << 20},
                         "models": [MODEL]})
    layout = plan_stack(stack, tmp_path / "run", allocate_port=ports(), which=installed)
    (redis,) = layout.services
    assert redis.kind == "redis" and redis.ready_url == f"redis://127.0.0.1:{redis.port}/0"
    argv = list(redis.argv)
    assert argv[0] == "/usr/bin/redis-server"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == str(redis.port)
    assert argv[argv.index("--save") + 1] == "" and argv[argv.index("--appendonly") + 1] == "no"
    assert argv[argv.index("--maxmemory") + 1] == str(64 << 20)
    assert argv[argv.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "run" / "redis")
    resolved = load_stack(layout.resolved_path)  # what the workers and the router read
    assert resolved.redis.url == redis.ready_url
    assert resolved.supervisor.run_dir == str(tmp_path / "run")


def test_a_given_url_or_no_use_of_redis_starts_nothing(tmp_path: Path) -> None:
    given = parse_stack({"cache": {"redis": {}}, "redis": {"url": "redis://10.0.0.9:6379/0"}, "models": [MODEL]})
    layout = plan_stack(given, tmp_path / "a", allocate_port=ports(), which=missing)
    assert layout.services == () and layout.resolved.redis.url == "redis://10.0.0.9:6379/0"
    unused = parse_stack({"models": [MODEL]})
    layout = plan_stack(unused, tmp_path / "b", allocate_port=ports(), which=missing)
    assert layout.services == () and layout.resolved.redis.url is None


def test_without_redis_server_installed_the_error_says_how_to_get_it(tmp_path: Path) -> None:
    stack = parse_stack({"cache": {"redis": {}}, "models": [MODEL]})
    with pytest.raises(ConfigError, match="apt-get install redis-server"):
        plan_stack(stack, tmp_path / "run", allocate_port=ports(), which=missing)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_planned_redis_server_starts_and_answers(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    stack = parse_stack({"cache": {"redis": {}}, "redis": {"port": free_port()}, "models": [MODEL]})
    (spec,) = plan_stack(stack, tmp_path / "run").services
    process = ManagedProcess(spec)
    assert not is_ready(process)
    process.start(0.0)
    try:
        deadline = time.monotonic() + 10
        while not is_ready(process):
            assert process.poll() is None, "".join(process.log_tail())
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
    finally:
        process.kill()
    assert process.poll() is not None
