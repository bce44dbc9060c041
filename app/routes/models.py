"""`GET /v1/models` and `GET /v1/models/{id}`: the configured model backends, in the shape
OpenAI clients list and retrieve models in."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.errors import ModelNotFound
from app.openai_wire import with_error_member
from app.problems import EXCEPTION_HANDLERS
from planner.conversations import Conversations


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A backend as OpenAI clients read a model, plus what it serves and where."""

    id: str
    object: str = "model"
    created: int
    """When this process configured it (Unix seconds)."""
    owned_by: str = "switchboard"
    model: str
    base_url: str


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelInfo]
    object: str = "list"


@get("/v1/models", tags=["service"], summary="The configured model backends")
async def list_models(
    request: Request[Any, Any, Any], conversations: NamedDependency[Conversations]
) -> ModelList:
    return ModelList(_models(request, conversations))


@get("/v1/models/{model_id:str}", tags=["service"], summary="One configured model backend",
     exception_handlers=with_error_member(EXCEPTION_HANDLERS))
async def get_model(
    request: Request[Any, Any, Any], conversations: NamedDependency[Conversations],
    model_id: FromPath[str],
) -> ModelInfo:
    models = _models(request, conversations)
    found = next((m for m in models if m.id == model_id), None)
    if found is None:
        raise ModelNotFound(f"model {model_id!r} not found; configured: "
                            f"{', '.join(m.id for m in models)} (GET /v1/models lists them)")
    return found


def _models(request: Request[Any, Any, Any], conversations: Conversations) -> list[ModelInfo]:
    created: int = request.app.state.started_at
    return [ModelInfo(id=b.name, created=created, model=b.model, base_url=b.base_url)
            for b in conversations.backends()]
