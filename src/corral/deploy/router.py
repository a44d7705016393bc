"""The router: its stack file (a ConfigMap), the right to watch pods, a Deployment of at
least two replicas spread over nodes, a Service, a PodDisruptionBudget, a CPU autoscaler
and, when asked, an Ingress.

The router in the cluster reads the same stack file with three changes
(:func:`router_stack`): it binds all interfaces, it finds its workers by watching pods
(``router.discovery: {kind: kubernetes}`` unless the stack says otherwise) and, when corral
deploys the Redis, it uses that Redis's Service. API keys come from a Secret through
``CORRAL_API_KEYS`` and never enter the ConfigMap.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from corral.config import API_KEYS_ENV, KubernetesDiscoveryConfig, StackConfig
from corral.deploy.names import NAME, ROUTER, STACK_DIGEST_ANNOTATION, common_labels
from corral.deploy.objects import Component, Object, metadata, obj

STACK_DIR = "/etc/corral"
STACK_FILE = "stack.yaml"
STACK_CONFIGMAP = "corral-stack"
DEFAULT_PORT = 8000


def router_port(stack: StackConfig) -> int:
    """The router's port in the pod (``router.port``; 0, 'any free port', becomes 8000)."""
    return stack.router.port or DEFAULT_PORT


def router_stack(stack: StackConfig, redis_url: str | None) -> StackConfig:
    """The stack as the in-cluster router reads it."""
    router_update: dict[str, Any] = {"host": "0.0.0.0", "port": router_port(stack)}
    if stack.router.discovery is None:
        router_update["discovery"] = KubernetesDiscoveryConfig(namespace=stack.deploy.namespace)
    update: dict[str, Any] = {"router": stack.router.model_copy(update=router_update)}
    if redis_url is not None and stack.redis.url is None:
        update["redis"] = stack.redis.model_copy(update={"url": redis_url})
    return stack.model_copy(update=update)


def router_stack_text(stack: StackConfig) -> str:
    """The router's stack file: the whole stack but ``deploy``, which only the renderer reads."""
    document = {key: value for key, value in stack.model_dump(mode="json").items() if key != "deploy"}
    return str(yaml.safe_dump(document, sort_keys=False))


def _labels() -> dict[str, str]:
    return {**common_labels("router"), NAME: ROUTER}


def _selector() -> dict[str, str]:
    return {NAME: ROUTER}


def stack_configmap(stack_text: str, namespace: str) -> Object:
    return obj("v1", "ConfigMap", metadata(STACK_CONFIGMAP, namespace, _labels()), data={STACK_FILE: stack_text})


def access(namespace: str) -> list[Object]:
    """ServiceAccount, Role and RoleBinding: the router may get, list and watch pods, nothing else."""
    meta = metadata(ROUTER, namespace, _labels())
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    binding = {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROUTER},
        "subjects": [{"kind": "ServiceAccount", "name": ROUTER, "namespace": namespace}],
    }
    return [
        obj("v1", "ServiceAccount", meta),
        obj("rbac.authorization.k8s.io/v1", "Role", metadata(ROUTER, namespace, _labels()), rules=[rule]),
        obj("rbac.authorization.k8s.io/v1", "RoleBinding", metadata(ROUTER, namespace, _labels()), **binding),
    ]


def _probe(period_s: int, failures: int) -> Object:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period_s, "timeoutSeconds": 3,
            "failureThreshold": failures}  # fmt: skip


def _container(stack: StackConfig) -> Object:
    deploy = stack.deploy
    port = router_port(stack)
    command = ["corral", "router", "--stack", f"{STACK_DIR}/{STACK_FILE}", "--host", "0.0.0.0", "--port", str(port)]
    keys = {"secretKeyRef": {"name": deploy.api_keys_secret, "key": "keys", "optional": True}}
    return {
        "name": "router",
        "image": deploy.image,
        "command": command,
        "env": [{"name": API_KEYS_ENV, "valueFrom": keys}],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": deploy.router_cpu, "memory": deploy.router_memory},
                      "limits": {"memory": deploy.router_memory}},
        "startupProbe": _probe(2, 30),
        "readinessProbe": _probe(5, 2),
        "livenessProbe": _probe(10, 3),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(deploy.prestop_sleep_s)]}}},
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "stack", "mountPath": STACK_DIR, "readOnly": True}],
    }  # fmt: skip


def deployment(stack: StackConfig, stack_text: str) -> Object:
    """Router pods spread over nodes; a changed stack file rolls them (its digest is in the template)."""
    deploy = stack.deploy
    digest = hashlib.sha256(stack_text.encode()).hexdigest()
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
              "labelSelector": {"matchLabels": _selector()}}  # fmt: skip
    pod = {
        "serviceAccountName": ROUTER,
        "terminationGracePeriodSeconds": deploy.prestop_sleep_s + int(stack.router.drain_timeout_s) + 5,
        "topologySpreadConstraints": [spread],
        "containers": [_container(stack)],
        "volumes": [{"name": "stack", "configMap": {"name": STACK_CONFIGMAP}}],
    }
    replicas = {} if _autoscaled(stack) else {"replicas": deploy.router_replicas}
    template = {"metadata": {"labels": _labels(), "annotations": {STACK_DIGEST_ANNOTATION: digest}}, "spec": pod}
    return obj("apps/v1", "Deployment", metadata(ROUTER, deploy.namespace, _labels()), spec={
        **replicas,
        "selector": {"matchLabels": _selector()},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": template,
    })  # fmt: skip


def _autoscaled(stack: StackConfig) -> bool:
    return stack.deploy.router_max_replicas > stack.deploy.router_replicas


def service(stack: StackConfig) -> Object:
    port = {"name": "http", "port": router_port(stack), "targetPort": "http", "protocol": "TCP"}
    return obj("v1", "Service", metadata(ROUTER, stack.deploy.namespace, _labels()), spec={
        "type": "ClusterIP", "selector": _selector(), "ports": [port],
    })  # fmt: skip


def disruption_budget(stack: StackConfig) -> Object:
    """Voluntary disruptions (drains, upgrades) keep all but one router up."""
    return obj("policy/v1", "PodDisruptionBudget", metadata(ROUTER, stack.deploy.namespace, _labels()), spec={
        "minAvailable": stack.deploy.router_replicas - 1, "selector": {"matchLabels": _selector()},
    })  # fmt: skip


def autoscaler(stack: StackConfig) -> Object:
    deploy = stack.deploy
    cpu = {"type": "Resource", "resource": {"name": "cpu",
                                            "target": {"type": "Utilization",
                                                       "averageUtilization": deploy.router_cpu_utilization}}}
    return obj("autoscaling/v2", "HorizontalPodAutoscaler", metadata(ROUTER, deploy.namespace, _labels()), spec={
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ROUTER},
        "minReplicas": deploy.router_replicas,
        "maxReplicas": deploy.router_max_replicas,
        "metrics": [cpu],
    })  # fmt: skip


def ingress(stack: StackConfig) -> Object:
    deploy = stack.deploy
    backend = {"service": {"name": ROUTER, "port": {"name": "http"}}}
    rule: Object = {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
    if deploy.ingress_host is not None:
        rule = {"host": deploy.ingress_host, **rule}
    spec: Object = {}
    if deploy.ingress_class is not None:
        spec["ingressClassName"] = deploy.ingress_class
    if deploy.ingress_tls_secret is not None:
        tls: Object = {"secretName": deploy.ingress_tls_secret}
        if deploy.ingress_host is not None:
            tls = {"hosts": [deploy.ingress_host], **tls}
        spec["tls"] = [tls]
    spec["rules"] = [rule]
    meta = metadata(ROUTER, deploy.namespace, _labels(), deploy.ingress_annotations)
    return obj("networking.k8s.io/v1", "Ingress", meta, spec=spec)


def router_component(stack: StackConfig, redis_url: str | None) -> Component:
    """``manifests/10-router.yaml``."""
    stack_text = router_stack_text(router_stack(stack, redis_url))
    ns = stack.deploy.namespace
    objects = [stack_configmap(stack_text, ns), *access(ns), deployment(stack, stack_text), service(stack),
               disruption_budget(stack)]  # fmt: skip
    if _autoscaled(stack):
        objects.append(autoscaler(stack))
    if stack.deploy.ingress_class is not None or stack.deploy.ingress_host is not None:
        objects.append(ingress(stack))
    return Component("manifests/10-router.yaml", tuple(objects))
