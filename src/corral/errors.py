"""The one exception tree of corral.

    CorralError
    ├── ConfigError                 a stack file or CLI value is invalid (names the field)
    ├── ModelSourceError            a model's weights cannot be located or assembled
    └── APIError                    anything that becomes an HTTP error response
        ├── InvalidRequestError     400  malformed JSON, bad or missing field
        │   ├── UnsupportedParameterError   400  a parameter we do not implement (n>1, tools, ...)
        │   ├── WrongTaskError              400  e.g. a chat request to an embedding model
        │   └── ContextLengthError          400  prompt (+ max_tokens) exceeds the context
        ├── AuthenticationError     401  missing or unknown API key
        ├── PermissionDeniedError   403  the key may not use this model
        ├── RateLimitError          429  over a key's or model's RPM / TPM / concurrency limit
        ├── ModelNotFoundError      404  unknown model name or alias (lists the known ones)
        ├── RouteNotFoundError      404  no such path
        ├── MethodNotAllowedError   405  wrong HTTP method for the path
        ├── PayloadTooLargeError    413  body over the configured limit
        ├── OverloadedError         503  bounded queue full (carries Retry-After)
        ├── NoHealthyEndpointError  503  every replica of the model is down
        └── UpstreamError           502  a worker failed and no retry was possible

Each APIError knows its HTTP status and OpenAI error ``type``; :meth:`APIError.to_dict`
gives OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, used
both for JSON responses and for the SSE error frame sent once a stream has started.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class CorralError(Exception):
    """Base of every error corral raises on purpose."""


class ConfigError(CorralError):
    """A stack file, environment or CLI value is invalid; the message names the field."""


class ModelSourceError(CorralError):
    """A model's weights cannot be located (package missing, file absent)."""


class APIError(CorralError):
    """An error that is answered over HTTP in OpenAI's error shape."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code if self.code is not None else self.status,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequestError(APIError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"'{param}' is not supported: {detail}", param=param, code="unsupported_parameter")


class WrongTaskError(InvalidRequestError):
    def __init__(self, model: str, task: str, endpoint: str) -> None:
        super().__init__(
            f"model '{model}' serves task '{task}' and cannot answer {endpoint}",
            param="model",
            code="wrong_task",
        )


class ContextLengthError(InvalidRequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages", code="context_length_exceeded")


class AuthenticationError(APIError):
    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(APIError):
    status = 403
    type = "permission_error"

    def __init__(self, key_name: str, model: str) -> None:
        super().__init__(
            f"API key '{key_name}' may not use model '{model}'", param="model", code="model_not_allowed"
        )


class RateLimitError(APIError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message, code="rate_limit_exceeded", headers=headers)


class ModelNotFoundError(APIError):
    status = 404
    type = "not_found_error"

    def __init__(self, model: str | None, known: list[str]) -> None:
        shown = "(missing)" if model is None else f"'{model}'"
        super().__init__(
            f"model {shown} does not exist; known models: {', '.join(sorted(known)) or 'none'}",
            param="model",
            code="model_not_found",
        )


class RouteNotFoundError(APIError):
    status = 404
    type = "not_found_error"

    def __init__(self, path: str) -> None:
        super().__init__(f"no route for {path}", code="route_not_found")


class MethodNotAllowedError(APIError):
    status = 405
    type = "invalid_request_error"

    def __init__(self, method: str, path: str, allowed: str) -> None:
        super().__init__(
            f"{method} is not allowed on {path} (use {allowed})",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )


class PayloadTooLargeError(APIError):
    status = 413
    type = "invalid_request_error"

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"request body exceeds the limit of {limit_bytes} bytes", code="payload_too_large"
        )


class OverloadedError(APIError):
    status = 503
    type = "overloaded_error"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, code="overloaded", headers={"Retry-After": str(retry_after_s)})


class NoHealthyEndpointError(APIError):
    status = 503
    type = "overloaded_error"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"no healthy endpoint serves model '{model}' right now",
            code="no_healthy_endpoint",
            headers={"Retry-After": "1"},
        )


class UpstreamError(APIError):
    status = 502
    type = "server_error"

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message, code="upstream_error")
        self.endpoint = endpoint
