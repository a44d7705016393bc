"""Label values and resource names cut from model names: always valid for Kubernetes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from corral.deploy.names import label_value, resource_name

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MODEL_NAMES = st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$", fullmatch=True)


def test_label_value_keeps_what_is_allowed():
    assert label_value("llama-3.1-8b") == "llama-3.1-8b"
    assert label_value("meta-llama/Llama-3.1-8B") == "meta-llama-Llama-3.1-8B"
    assert label_value("org/model:v2-") == "org-model-v2"


def test_long_names_end_in_a_digest_of_the_whole():
    a, b = "m" * 70 + "-a", "m" * 70 + "-b"
    assert len(label_value(a)) <= 63 and label_value(a) != label_value(b)
    assert len(resource_name("vllm", a, limit=50)) <= 50
    assert resource_name("vllm", a, limit=50) != resource_name("vllm", b, limit=50)


def test_resource_name_is_a_dns_label():
    assert resource_name("vllm", "meta-llama/Llama-3.1-8B", "decode") == "vllm-meta-llama-llama-3-1-8b-decode"


@given(MODEL_NAMES)
def test_any_model_name_gives_valid_names(name: str):
    assert LABEL_VALUE.match(label_value(name)) and label_value(name)
    assert DNS_LABEL.match(resource_name("vllm", name, "prefill", limit=50))
