"""From a stack to the processes that run it: worker replicas on free ports, then the router.

The supervisor writes the *resolved* stack (each model's ``endpoints`` filled with the
URLs of the workers it launches) to the run directory; the router and the workers read
that file, so every process works from one validated config.

When the stack uses Redis (``cache.redis`` or ``router.shared_limits``) without giving
``redis.url``, a ``redis-server`` on loopback is a *service*: started before the workers,
stopped after everything, and its URL is the resolved stack's ``redis.url``.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from corral.config import LOCAL_ENGINES, StackConfig, dial_host, dump_stack
from corral.errors import ConfigError
from corral.observability.prometheus import prometheus_argv, write_observability_files
from corral.supervisor.process import ProcessSpec


class StackLayout(NamedTuple):
    resolved: StackConfig
    resolved_path: Path
    workers: tuple[ProcessSpec, ...]
    router: ProcessSpec
    #: Started after the router and stopped last: Prometheus, when the stack asks for it.
    extras: tuple[ProcessSpec, ...] = ()
    #: Started before the workers and stopped after everything: redis-server, when needed.
    services: tuple[ProcessSpec, ...] = ()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url(host: str, port: int) -> str:
    return f"http://{dial_host(host)}:{port}"


def _refuse_remote_replicas(stack: StackConfig) -> None:
    """`corral up` starts llama.cpp and ONNX workers only: a vLLM model with replicas (a stack
    written for `corral deploy`, e.g. by `corral plan --emit`) cannot run here."""
    for model in stack.models:
        if model.engine not in LOCAL_ENGINES and model.replicas > 0:
            gpus = f" on {model.gpu.count} x {model.gpu.type} each" if model.gpu is not None else ""
            raise ConfigError(
                f"models: '{model.name}' asks for {model.replicas} {model.engine} replica(s){gpus}, which `corral up` "
                f"cannot start on this machine (it starts {' and '.join(sorted(LOCAL_ENGINES))} workers); deploy "
                "that stack to GPUs, or set its replicas: 0 and list the endpoints of vLLM servers you run"
            )


def plan_stack(
    stack: StackConfig,
    run_dir: Path,
    *,
    allocate_port: Callable[[str], int] = free_port,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
) -> StackLayout:
    """Lay out the worker replicas and the router; write the resolved stack file."""
    _refuse_remote_replicas(stack)
    redis = _redis_server(stack, run_dir, allocate_port, which)
    if redis is not None:
        stack = stack.model_copy(update={"redis": stack.redis.model_copy(update={"url": redis.ready_url})})
    run_dir.mkdir(parents=True, exist_ok=True)
    if redis is not None:
        (run_dir / "redis").mkdir(exist_ok=True)
    resolved_path = run_dir / "stack.resolved.yaml"
    host = stack.worker.host
    workers: list[ProcessSpec] = []
    models = []
    for model in stack.models:
        launched: list[str] = []
        prefilling: list[str] = []
        for replica in range(model.replicas):
            port = allocate_port(host)
            url = _url(host, port)
            # The first prefill_replicas only prefill; the rest decode (or do both).
            prefill = replica < model.prefill_replicas
            role = "prefill" if prefill else ("decode" if model.prefill_replicas else "both")
            (prefilling if prefill else launched).append(url)
            name = f"{model.name}-{'prefill-' if prefill else ''}{replica}"
            workers.append(
                ProcessSpec(
                    name=name,
                    argv=(python, "-m", "corral", "worker", "--stack", str(resolved_path),
                          "--model", model.name, "--host", host, "--port", str(port), "--role", role),
                    log_path=run_dir / "logs" / f"{name.replace('/', '_')}.log",
                    ready_url=f"{url}/health",
                    kind="worker",
                    model=model.name,
                    port=port,
                )
            )
        models.append(model.model_copy(update={
            "endpoints": (*model.endpoints, *launched),
            "prefill_endpoints": (*model.prefill_endpoints, *prefilling),
        }))
    router_port = stack.router.port or allocate_port(stack.router.host)
    resolved = stack.model_copy(
        update={
            "models": tuple(models),
            "router": stack.router.model_copy(update={"port": router_port}),
            # Workers keep their disk KV tier under it (`corral up --run-dir` included).
            "supervisor": stack.supervisor.model_copy(update={"run_dir": str(run_dir)}),
        }
    )
    resolved_path.write_text(dump_stack(resolved), encoding="utf-8")
    router = ProcessSpec(
        name="router",
        argv=(python, "-m", "corral", "router", "--stack", str(resolved_path)),
        log_path=run_dir / "logs" / "router.log",
        ready_url=f"{_url(stack.router.host, router_port)}/ready",
        kind="router",
        port=router_port,
    )
    extras = () if not stack.observability.prometheus else (_prometheus(resolved, run_dir, allocate_port),)
    services = () if redis is None else (redis,)
    return StackLayout(resolved, resolved_path, tuple(workers), router, extras, services)


def _redis_server(
    stack: StackConfig, run_dir: Path, allocate_port: Callable[[str], int], which: Callable[[str], str | None]
) -> ProcessSpec | None:
    """redis-server on loopback when the stack uses Redis and gives no URL: nothing saved to
    disk, LRU eviction past ``redis.max_memory_bytes``; its ready_url is its redis:// URL."""
    if not stack.needs_redis or stack.redis.url is not None:
        return None
    executable = which("redis-server")
    if executable is None:
        raise ConfigError(
            "redis: the stack uses Redis (cache.redis or router.shared_limits) and gives no redis.url, "
            "so `corral up` starts redis-server, which is not installed: apt-get install redis-server "
            "(or set redis.url to a Redis you run)"
        )
    port = stack.redis.port or allocate_port("127.0.0.1")
    data_dir = run_dir / "redis"
    return ProcessSpec(
        name="redis",
        argv=(executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
              "--maxmemory", str(stack.redis.max_memory_bytes), "--maxmemory-policy", "allkeys-lru",
              "--dir", str(data_dir), "--daemonize", "no", "--protected-mode", "yes"),
        log_path=run_dir / "logs" / "redis.log",
        ready_url=f"redis://127.0.0.1:{port}/0",
        kind="redis",
        port=port,
    )


def _prometheus(stack: StackConfig, run_dir: Path, allocate_port: Callable[[str], int]) -> ProcessSpec:
    """Prometheus scraping every process of the resolved stack, with corral's alert rules."""
    config_dir = run_dir / "observability"
    settings = stack.observability
    write_observability_files(stack, config_dir, interval_s=settings.scrape_interval_s)
    port = settings.prometheus_port or allocate_port("127.0.0.1")
    return ProcessSpec(
        name="prometheus",
        argv=tuple(prometheus_argv(config_dir, host="127.0.0.1", port=port)),
        log_path=run_dir / "logs" / "prometheus.log",
        ready_url=f"http://127.0.0.1:{port}/-/ready",
        kind="prometheus",
        port=port,
    )
