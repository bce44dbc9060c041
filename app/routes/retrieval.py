"""Retrieval routes: whether a tenant learns from use, where retrieval misses, and the tenant's
own embedding model (trained, compared, swapped, rolled back)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from app.auth import require
from app.pages import Cursor, Limit, page_of
from app.tenancy import tenant_of
from tools.learned import SearchFinds
from tools.learning import Learning, RetrievalSettings
from tools.tuning_jobs import RetrievalJob, RetrievalTraining, TenantModel, TrainRequest

Learnt = NamedDependency[Learning]
Training = NamedDependency[RetrievalTraining]


class ModelList(msgspec.Struct, frozen=True):
    items: list[TenantModel]
    """Newest first; at most one is active (none: the general model)."""
    next_cursor: str | None = None


class RolledBack(msgspec.Struct, frozen=True):
    model: str | None
    """The tenant's model now in use; null: the general one."""


class MissList(msgspec.Struct, frozen=True):
    items: list[SearchFinds]
    """Each tool the model had to find with `search_tools` before a good call of it, the most
    found first: requests retrieval did not offer the tool for."""
    next_cursor: str | None = None


class RetrievalController(Controller):
    path = "/v1/retrieval"
    tags = ["retrieval"]

    @get("/settings", guards=[require("tools:read")], summary="How retrieval learns")
    async def get_settings(self, request: Request[Any, Any, Any], learning: Learnt
                           ) -> RetrievalSettings:
        return await learning.settings(tenant_of(request))

    @put("/settings", guards=[require("tools:write")], summary="Turn learning from use on or off")
    async def put_settings(self, request: Request[Any, Any, Any], learning: Learnt,
                           data: JSONBody[RetrievalSettings]) -> RetrievalSettings:
        return await learning.set_settings(tenant_of(request), data)

    @get("/misses", guards=[require("tools:read")],
         summary="Tools the model had to find with search_tools")
    async def list_misses(self, request: Request[Any, Any, Any], learning: Learnt,
                          cursor: Cursor = None, limit: Limit = 50) -> MissList:
        found = await learning.search_finds(tenant_of(request))
        return MissList(*page_of(found, lambda f: f"{f.namespace}/{f.name}", cursor, limit))

    @post("/train", status_code=HTTP_202_ACCEPTED, guards=[require("tools:write")],
          summary="Fine-tune the tenant's own embedding model")
    async def train(self, request: Request[Any, Any, Any], training: Training,
                    data: JSONBody[TrainRequest]) -> RetrievalJob:
        """Trains in the background on the tenant's registered and learned examples (a fifth of
        them held out), then compares the new model with the one in use on the held-out ones:
        it is swapped in only when it ranks them better. Follow it with
        GET /v1/retrieval/jobs/{id}."""
        return await training.start(tenant_of(request), data)

    @get("/jobs/{job_id:str}", guards=[require("tools:read")],
         summary="A training job: its stage, progress and comparison")
    async def get_job(self, request: Request[Any, Any, Any], training: Training,
                      job_id: FromPath[str]) -> RetrievalJob:
        return await training.job(tenant_of(request), job_id)

    @get("/models", guards=[require("tools:read")], summary="The tenant's own embedding models")
    async def list_models(self, request: Request[Any, Any, Any], training: Training,
                          cursor: Cursor = None, limit: Limit = 50) -> ModelList:
        found = await training.models(tenant_of(request))
        return ModelList(*page_of(found, lambda m: m.id, cursor, limit))

    @post("/models/rollback", status_code=200, guards=[require("tools:write")],
          summary="Go back to the model used before the current one")
    async def rollback(self, request: Request[Any, Any, Any], training: Training) -> RolledBack:
        return RolledBack(model=await training.rollback(tenant_of(request)))
