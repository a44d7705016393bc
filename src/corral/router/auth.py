"""API keys at the router: ``Authorization: Bearer <key>`` checked against SHA-256 digests.

Keys are never stored or logged: the stack file (or ``CORRAL_API_KEYS``) yields digests,
and a request's key is hashed and looked up. With no key configured, the router is open.
A key may be limited to some models (names or aliases, resolved to canonical names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from corral.config import AuthConfig, ModelConfig
from corral.errors import AuthenticationError, PermissionDeniedError

_BEARER = b"bearer "


class ApiKey:
    __slots__ = ("models", "name")

    def __init__(self, name: str, models: frozenset[str] | None) -> None:
        self.name = name
        self.models = models  # canonical model names it may use; None: all


class Authenticator:
    """Who is calling (an :class:`ApiKey`), or a 401 / 403 in OpenAI's error shape."""

    def __init__(self, auth: AuthConfig, models: Iterable[ModelConfig]) -> None:
        canonical = {name: model.name for model in models for name in model.served_names}
        self._keys = {
            key.sha256: ApiKey(key.name, frozenset(canonical[m] for m in key.models) if key.models else None)
            for key in auth.keys
        }

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> ApiKey | None:
        """The caller's key; None when the router has no keys (open)."""
        if not self._keys:
            return None
        value = next((v for k, v in headers if k == b"authorization"), None)
        if value is None or not value[:7].lower() == _BEARER:
            raise AuthenticationError("this router requires an API key: send 'Authorization: Bearer <key>'")
        key = self._keys.get(hashlib.sha256(value[7:].strip()).hexdigest())
        if key is None:
            raise AuthenticationError("the API key is not valid")
        return key

    @staticmethod
    def authorize(key: ApiKey | None, model: str) -> None:
        """Raise 403 when ``key`` may not use ``model`` (its canonical name)."""
        if key is not None and key.models is not None and model not in key.models:
            raise PermissionDeniedError(key.name, model)
