"""API key routes (admin): create, list and revoke keys; creating a key can create a tenant."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.auth import ApiKey, ApiKeys, NewKey, Role, require
from app.pages import Cursor, Limit, page_of
from app.tenancy import DEFAULT_TENANT, tenant_of
from tools.errors import FieldError, SpecInvalid
from tools.spec import NAME_PATTERN

Keys = NamedDependency[ApiKeys]


class KeyRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Role
    tenant: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)] | None = None
    """Defaults to the caller's tenant; only the default tenant's admins may name another."""
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class KeyList(msgspec.Struct, frozen=True):
    items: list[ApiKey]
    next_cursor: str | None = None


class KeyController(Controller):
    path = "/v1/keys"
    tags = ["keys"]
    guards = [require("keys:admin")]

    @post("/", status_code=HTTP_201_CREATED, summary="Create an API key (shown once)")
    async def create(
        self, request: Request[Any, Any, Any], api_keys: Keys, data: JSONBody[KeyRequest]
    ) -> NewKey:
        tenant = _managed(tenant_of(request), data.tenant, "create keys for",
                          FieldError("/tenant", ""))
        return await api_keys.create(tenant, data.role, data.name)

    @get("/", summary="A tenant's keys (never their secrets): the caller's, by default")
    async def list(
        self, request: Request[Any, Any, Any], api_keys: Keys,
        tenant: Annotated[str | None, QueryParameter(pattern=NAME_PATTERN)] = None,
        cursor: Cursor = None, limit: Limit = 50,
    ) -> KeyList:
        where = FieldError("", "", parameter="query parameter 'tenant'")
        listed = _managed(tenant_of(request), tenant, "list the keys of", where)
        return KeyList(*page_of(await api_keys.of_tenant(listed), lambda k: k.id, cursor, limit))

    @delete("/{key_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Revoke a key")
    async def revoke(
        self, request: Request[Any, Any, Any], api_keys: Keys, key_id: FromPath[str]
    ) -> None:
        """A key of the caller's tenant; the default tenant's admins may revoke any key, as they
        may create one for any tenant."""
        caller = tenant_of(request)
        await api_keys.revoke(None if caller == DEFAULT_TENANT else caller, key_id)


def _managed(caller: str, wanted: str | None, doing: str, where: FieldError) -> str:
    """The tenant whose keys a request manages: the caller's own, or, for the default
    tenant's admins, any tenant they name."""
    tenant = wanted or caller
    if tenant != caller and caller != DEFAULT_TENANT:
        message = f"an admin of tenant {caller!r} can only {doing} {caller!r}"
        raise SpecInvalid([msgspec.structs.replace(where, message=message)])
    return tenant
