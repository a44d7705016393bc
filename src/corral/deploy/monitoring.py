"""Monitoring through the Prometheus operator: what to scrape, the alert rules, the dashboards.

- ServiceMonitor ``corral-router``: the router Service's ``/metrics``.
- ServiceMonitor ``corral-workers`` on a headless Service over every serving vLLM pod,
  copying the pods' ``corral.dev/model`` and ``corral.dev/role`` labels onto the series
  (as ``corral_dev_model``, ``corral_dev_role``): the queue autoscalers select by them.
- PrometheusRule ``corral``: :func:`corral.observability.alerts.alert_rules`, unchanged.
- ConfigMap ``corral-dashboards`` labelled ``grafana_dashboard: "1"`` (what Grafana's
  dashboard sidecar looks for): :func:`corral.observability.dashboards.dashboards`.

Every object carries ``deploy.monitoring_labels`` so your Prometheus selects it.
"""

from __future__ import annotations

import json

from corral.config import StackConfig
from corral.deploy.names import NAME, ROUTER, WORKER, WORKERS_SERVICE, common_labels
from corral.deploy.objects import Component, Object, metadata, obj
from corral.deploy.placement import Target
from corral.deploy.vllm_pod import PORT as WORKER_PORT
from corral.observability.alerts import alert_rules
from corral.observability.dashboards import dashboards

MONITORING_API = "monitoring.coreos.com/v1"
POD_LABELS = ("corral.dev/model", "corral.dev/role")


def _labels(stack: StackConfig, component: str) -> dict[str, str]:
    return {**common_labels(component), **stack.deploy.monitoring_labels}


def _interval(stack: StackConfig) -> str:
    return f"{stack.observability.scrape_interval_s:g}s"


def workers_service(stack: StackConfig) -> Object:
    """Headless: it exists for the ServiceMonitor to find the worker pods, not to balance."""
    port = {"name": "http", "port": WORKER_PORT, "targetPort": "http", "protocol": "TCP"}
    labels = {**common_labels("worker"), NAME: WORKERS_SERVICE}
    return obj("v1", "Service", metadata(WORKERS_SERVICE, stack.deploy.namespace, labels), spec={
        "clusterIP": "None", "selector": {NAME: WORKER}, "ports": [port],
    })  # fmt: skip


def service_monitor(stack: StackConfig, name: str, selector: dict[str, str], *, pod_labels: bool) -> Object:
    endpoint = {"port": "http", "path": "/metrics", "interval": _interval(stack)}
    spec: Object = {"selector": {"matchLabels": selector}, "endpoints": [endpoint]}
    if pod_labels:
        spec["podTargetLabels"] = list(POD_LABELS)
    return obj(MONITORING_API, "ServiceMonitor", metadata(name, stack.deploy.namespace, _labels(stack, "monitoring")),
               spec=spec)


def prometheus_rule(stack: StackConfig) -> Object:
    meta = metadata("corral", stack.deploy.namespace, _labels(stack, "monitoring"))
    return obj(MONITORING_API, "PrometheusRule", meta, spec=alert_rules())


def dashboards_configmap(stack: StackConfig) -> Object:
    labels = {**_labels(stack, "monitoring"), "grafana_dashboard": "1"}
    data = {name: json.dumps(board, indent=2) + "\n" for name, board in sorted(dashboards().items())}
    return obj("v1", "ConfigMap", metadata("corral-dashboards", stack.deploy.namespace, labels), data=data)


def monitoring_components(stack: StackConfig, target: Target) -> list[Component]:
    """``manifests/40-monitoring.yaml`` and ``manifests/41-dashboards.yaml``."""
    del target  # the same on both targets
    scrape = (
        workers_service(stack),
        service_monitor(stack, ROUTER, {NAME: ROUTER}, pod_labels=False),
        service_monitor(stack, WORKERS_SERVICE, {NAME: WORKERS_SERVICE}, pod_labels=True),
        prometheus_rule(stack),
    )
    return [
        Component("manifests/40-monitoring.yaml", scrape),
        Component("manifests/41-dashboards.yaml", (dashboards_configmap(stack),)),
    ]
