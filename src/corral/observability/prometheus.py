"""Prometheus for a corral stack: the scrape config, the files beside it, and a server.

`corral up --prometheus` starts Debian's ``prometheus`` binary with a generated config
that scrapes the router and every worker; the same files are written for users who run
their own Prometheus (`corral observability render`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from corral.config import StackConfig, dial_host
from corral.errors import ConfigError
from corral.observability.alerts import alert_rules
from corral.observability.dashboards import dashboards

RULES_FILE = "corral-rules.yml"


def _target(url: str) -> str:
    return urlsplit(url).netloc


def scrape_config(stack: StackConfig, *, interval_s: float = 5.0) -> dict[str, Any]:
    """A prometheus.yml scraping the router and every model's endpoints (with a model label)."""
    host = dial_host(stack.router.host)
    def groups(vllm: bool) -> list[dict[str, Any]]:
        """One target group per model and role (prefill workers are labelled role=prefill)."""
        return [
            {"targets": [_target(url) for url in urls], "labels": {"model": model.name, **labels}}
            for model in stack.models
            if (model.engine == "vllm") == vllm
            for urls, labels in ((model.endpoints, {}), (model.prefill_endpoints, {"role": "prefill"}))
            if urls
        ]

    workers, vllm = groups(False), groups(True)
    jobs: list[dict[str, Any]] = [
        {"job_name": "corral-router", "static_configs": [{"targets": [f"{host}:{stack.router.port}"]}]},
        {"job_name": "corral-workers", "static_configs": workers},
    ]
    if vllm:
        jobs.append({"job_name": "vllm", "static_configs": vllm})
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "rule_files": [RULES_FILE],
        "scrape_configs": jobs,
    }


def write_observability_files(stack: StackConfig, out_dir: Path, *, interval_s: float = 5.0) -> list[Path]:
    """prometheus.yml, the rules file, Grafana provisioning and dashboards, under ``out_dir``."""
    dash_dir = out_dir / "grafana" / "dashboards"
    prov_dir = out_dir / "grafana" / "provisioning"
    for folder in (dash_dir, prov_dir / "dashboards", prov_dir / "datasources"):
        folder.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {
        out_dir / "prometheus.yml": yaml.safe_dump(scrape_config(stack, interval_s=interval_s), sort_keys=False),
        out_dir / RULES_FILE: yaml.safe_dump(alert_rules(), sort_keys=False),
        prov_dir / "datasources" / "corral.yml": yaml.safe_dump({
            "apiVersion": 1,
            "datasources": [{"name": "Prometheus", "type": "prometheus", "access": "proxy",
                             "url": "http://127.0.0.1:9090", "isDefault": True}],
        }, sort_keys=False),
        prov_dir / "dashboards" / "corral.yml": yaml.safe_dump({
            "apiVersion": 1,
            "providers": [{"name": "corral", "folder": "corral", "type": "file",
                           "options": {"path": str(dash_dir.resolve())}}],
        }, sort_keys=False),
    }
    for name, dashboard in dashboards().items():
        files[dash_dir / name] = json.dumps(dashboard, indent=2)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def prometheus_argv(config_dir: Path, *, host: str, port: int) -> list[str]:
    """The command line of a Prometheus server for the files in ``config_dir``."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise ConfigError(
            "--prometheus: no prometheus binary on PATH; install it with "
            "`apt-get install --no-install-recommends prometheus`, or run your own with "
            f"{config_dir / 'prometheus.yml'}"
        )
    return [
        binary,
        f"--config.file={config_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={config_dir / 'tsdb'}",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
