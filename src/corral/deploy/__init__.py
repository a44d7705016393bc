"""`corral deploy`: the stack file as Kubernetes manifests, for EKS or on-prem.

Choice: plain manifests built by typed Python functions from the validated
:class:`~corral.config.StackConfig`, dumped as YAML (one file per component), rather than
a Helm chart with a ``values.schema.json`` generated from the pydantic model. Why:

- one configuration model: the stack file is the only input, validated once by
  corral's own loader. A chart would add a second one (values), a mapping from one to
  the other, and a template language between values and objects, where the same setting
  lives in three places (an anti-pattern of our conventions).
- the logic stays in Python: a replica that spans nodes becomes a LeaderWorkerSet with
  Ray, the vLLM command comes from :func:`corral.engines.vllm.vllm_launch`, alert rules
  and dashboards come from :mod:`corral.observability`. In Helm each would be a template
  re-implementing it, or a value rendered by corral beforehand anyway.
- testable offline: builders are pure functions (unit tests inspect the dicts), the
  output is deterministic (snapshot tests), and every object is validated against
  Kubernetes' schemas with no cluster and no helm binary.

What it costs: no ``helm upgrade`` / ``helm rollback`` release history. ``kubectl apply``
of a re-rendered directory (or GitOps: commit the directory, let Argo CD or Flux apply
it) covers updates; docs/deploy.md says how. Modules: :mod:`.render` (the entry point and
the file layout), :mod:`.placement` (GPUs, nodes, per-target selectors), :mod:`.router`,
:mod:`.workers` and :mod:`.vllm_pod`, :mod:`.redis`, :mod:`.monitoring`, :mod:`.cluster`,
:mod:`.eksctl`, :mod:`.validate`, :mod:`.names` (labels shared with the router's
Kubernetes discovery).
"""
