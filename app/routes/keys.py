"""API key routes (admin): create, list and revoke keys; creating a key can create a tenant."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.auth import ApiKey, ApiKeys, NewKey, require
from app.tenancy import DEFAULT_TENANT, tenant_of
from tools.errors import FieldError, SpecInvalid
from tools.spec import NAME_PATTERN

Keys = NamedDependency[ApiKeys]


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True):
    role: Annotated[str, msgspec.Meta(pattern="^(admin|developer|chat|viewer)$")]
    tenant: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)] | None = None
    """Defaults to the caller's tenant; only the default tenant's admins may name another."""
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class KeyList(msgspec.Struct, frozen=True):
    keys: list[ApiKey]


class KeyController(Controller):
    path = "/v1/keys"
    tags = ["keys"]
    guards = [require("keys:admin")]

    @post("/", status_code=HTTP_201_CREATED, summary="Create an API key (shown once)")
    async def create(
        self, request: Request[Any, Any, Any], api_keys: Keys, data: JSONBody[KeyRequest]
    ) -> NewKey:
        caller = tenant_of(request)
        tenant = data.tenant or caller
        if tenant != caller and caller != DEFAULT_TENANT:
            raise SpecInvalid([FieldError(
                "/tenant", f"an admin of tenant {caller!r} can only create keys for {caller!r}"
            )])
        return await api_keys.create(tenant, data.role, data.name)

    @get("/", summary="This tenant's keys (never their secrets)")
    async def list(self, request: Request[Any, Any, Any], api_keys: Keys) -> KeyList:
        return KeyList(await api_keys.of_tenant(tenant_of(request)))

    @delete("/{key_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Revoke a key")
    async def revoke(
        self, request: Request[Any, Any, Any], api_keys: Keys, key_id: FromPath[str]
    ) -> None:
        await api_keys.revoke(tenant_of(request), key_id)
