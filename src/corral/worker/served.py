"""The one model a worker serves, and the checks every endpoint makes against it.

A request names a model (its name or an alias: else 404), calls an endpoint the
model's task can answer (else 400 WrongTaskError), and arrives after the model is
loaded (else 503 with Retry-After). Bodies are JSON objects (else 400).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from corral.config import ModelConfig
from corral.errors import ModelNotFoundError, OverloadedError, WrongTaskError
from corral.protocol.fields import ACCEPTING_TASKS, ENDPOINT_TASKS, parse_json_object
from corral.worker.engine import Engine
from corral.worker.schemas import parse

logger = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)

#: nginx's "client closed request": the status logged for work dropped on a disconnect.
CLIENT_CLOSED = 499


def json_response(
    payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    content = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def read_body(request: Request, schema: type[Body]) -> Body:
    return parse(schema, parse_json_object(await request.body()))


class ServedModel:
    """A model config, its engine, and its load state."""

    def __init__(self, config: ModelConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.load_error: BaseException | None = None
        self.created = int(time.time())
        #: Called with the load time in seconds once the engine is ready.
        self.on_loaded: Callable[[float], None] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    async def load(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Load the engine (the server already listens); record and report a failure."""
        started = time.monotonic()
        try:
            await self.engine.start()
        except Exception as exc:
            self.load_error = exc
            logger.error("model %s failed to load: %s", self.name, exc)
            if on_failure is not None:
                on_failure(exc)
            return
        load_s = time.monotonic() - started
        logger.info("model %s ready in %.2f s", self.name, load_s)
        if self.on_loaded is not None:
            self.on_loaded(load_s)

    def check_name(self, model: str | None) -> None:
        if model is not None and model not in self.config.served_names:
            raise ModelNotFoundError(model, list(self.config.served_names))

    def check_loaded(self) -> None:
        if not self.engine.loaded:
            state = "failed to load" if self.load_error is not None else "is still loading"
            raise OverloadedError(f"model '{self.name}' {state}", retry_after_s=1)

    def admit(self, model: str, endpoint: str) -> None:
        """The checks of every OpenAI endpoint: name, task, load state."""
        self.check_name(model)
        if self.config.task not in ACCEPTING_TASKS[ENDPOINT_TASKS[endpoint]]:
            raise WrongTaskError(self.name, self.config.task, endpoint)
        self.check_loaded()
