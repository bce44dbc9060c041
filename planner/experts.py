"""Expert models as tools: a `model` tool's call is one chat request to a backend of this
service (tools/experts.py is the seam the tool domain asks through), traced as a `chat` span
under the call's `execute_tool` span."""

from __future__ import annotations

import json
from typing import Any

from planner.errors import ModelResponseError, ModelUnavailable
from planner.messages import ChatMessage, ModelRequest
from planner.model_client import ChatModel
from planner.tracing import TurnTracer, mark_error
from tools.experts import ExpertFailure, ExpertReply
from tools.outcome import ModelUsage
from tools.redaction import Redactor
from tools.spec import ModelExecutor


class ModelExperts:
    """The service's model backends, as `model` tools ask them."""

    def __init__(self, models: dict[str, ChatModel], tracer: TurnTracer) -> None:
        self.models, self.tracer = models, tracer

    def backends(self) -> list[str]:
        return sorted(self.models)

    async def ask(self, tenant: str, executor: ModelExecutor, arguments: dict[str, Any]
                  ) -> ExpertReply:
        """The system text as instructions, the arguments as the user's message; with an output
        schema, the answer decoded under it (`response_format`)."""
        model = self.models[executor.backend]
        backend = model.backend
        system = [ChatMessage(role="system", content=executor.system)] if executor.system else []
        schema = executor.output_schema
        request = ModelRequest(
            messages=[*system, ChatMessage(role="user",
                                           content=json.dumps(arguments, ensure_ascii=False))],
            response_format=None if schema is None else {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True}},
            max_completion_tokens=executor.max_tokens,
        )
        redact = Redactor([backend.api_key])
        with self.tracer.chat(tenant=tenant, backend=backend, phase="expert", request=request,
                              redact=redact) as span:
            try:
                reply = await model.complete(request)
            except (ModelUnavailable, ModelResponseError, ValueError) as exc:
                mark_error(span, type(exc).__name__, str(exc), exc)
                raise ExpertFailure(str(exc),
                                    retryable=isinstance(exc, ModelUnavailable)) from exc
            self.tracer.chat_reply(span, reply, redact,
                                   structured=request.response_format is not None)
        usage = reply.usage
        return ExpertReply(text=reply.content, usage=ModelUsage(
            backend=backend.name, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens))
