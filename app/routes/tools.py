"""Tool registry routes: register, version, list, delete and search tools."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth import require
from app.idempotency import IdempotencyKeys
from app.pages import Cursor, Limit, page_of
from app.tenancy import tenant_of
from tools.errors import ExampleNotFound, FieldError, SpecInvalid
from tools.index import SearchHit
from tools.learning import Learning, ToolExamples
from tools.openapi import ImportOptions
from tools.openapi_import import ImportedTools, fetch_document, import_openapi, parse_document
from tools.registry import ToolRegistry
from tools.spec import DEFAULT_NAMESPACE, NAME_PATTERN, URL_PATTERN, ToolRecord, ToolSpec
from tools.validation import parse_specs, schema_errors

Registry = NamedDependency[ToolRegistry]
Idempotency = NamedDependency[IdempotencyKeys]
Learnt = NamedDependency[Learning]
WRITE = require("tools:write")
MAX_VERSION = 2**31 - 1  # versions are Postgres integers
MAX_K = 100
Namespace = Annotated[
    str, QueryParameter(pattern=NAME_PATTERN, description="Namespace of the tool.")
]


class BulkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tools: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(description="Tool specs, each as for POST /v1/tools.", max_length=10_000),
    ]


class BulkResult(msgspec.Struct, frozen=True):
    created: int
    updated: int
    unchanged: int


HttpUrl = Annotated[str, msgspec.Meta(pattern=URL_PATTERN, description="http(s) URL")]


class OpenApiImport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    namespace: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    document: Annotated[
        dict[str, Any] | str | None,
        msgspec.Meta(description="The document: as JSON, or as its JSON or YAML text."),
    ] = None
    url: HttpUrl | None = None
    base_url: Annotated[
        HttpUrl | None,
        msgspec.Meta(description="The API's root URL; overrides the document's servers."),
    ] = None
    operations: Annotated[
        list[str], msgspec.Meta(description="Only these operationIds (all when empty).")
    ] = []
    tags: Annotated[
        list[str], msgspec.Meta(description="Only operations with one of these tags.")
    ] = []
    headers: Annotated[
        dict[str, str],
        msgspec.Meta(description="Sent on every call (API keys); write-only like a secret."),
    ] = {}

    def options(self) -> ImportOptions:
        return ImportOptions(namespace=self.namespace, base_url=self.base_url,
                             operations=self.operations, tags=self.tags, headers=self.headers)

    def source_errors(self) -> list[FieldError]:
        if (self.document is None) == (self.url is None):
            return [FieldError("/document", "give the OpenAPI document inline as `document` "
                               "or its address as `url`: exactly one of the two")]
        return []


class ToolPage(msgspec.Struct, frozen=True):
    items: list[ToolRecord]
    next_cursor: str | None = None


class SearchResults(msgspec.Struct, frozen=True):
    results: list[SearchHit]


async def checked(spec: ToolSpec) -> ToolSpec:
    """The spec after the checks the type alone cannot make (`schema_errors`), run off the
    event loop: a large schema takes a while to check."""
    errors = await asyncio.to_thread(lambda: list(schema_errors(spec)))
    if errors:
        raise SpecInvalid(errors)
    return spec


def _shed_when_busy(app: ASGIApp) -> ASGIApp:
    """Turn a search away before its guards run or its query is parsed when the embedder's queue
    is past its bound: under a flood, refusing is most of the work, so it is done as early as the
    tenant is known (bench/BENCHMARKS.md, "Liveness under load")."""

    async def shed(scope: Scope, receive: Receive, send: Send) -> None:
        Litestar.from_scope(scope).state.registry.queue.check()
        await app(scope, receive, send)

    return shed


class ToolController(Controller):
    path = "/v1/tools"
    tags = ["tools"]
    guards = [require("tools:read")]

    @post("/", status_code=HTTP_201_CREATED, summary="Register a tool", guards=[WRITE])
    async def create_tool(
        self, request: Request[Any, Any, Any], registry: Registry, idempotency: Idempotency,
        data: JSONBody[ToolSpec],
    ) -> Response[ToolRecord]:
        async def create() -> ToolRecord:
            return await registry.create(tenant_of(request), await checked(data))

        return await idempotency.once(request, "POST /v1/tools", HTTP_201_CREATED, create)

    @post(
        "/bulk",
        status_code=HTTP_200_OK,
        summary="Create or replace many tools at once",
        guards=[WRITE],
    )
    async def bulk_tools(
        self, request: Request[Any, Any, Any], registry: Registry, idempotency: Idempotency,
        data: JSONBody[BulkRequest],
    ) -> Response[BulkResult]:
        """All or nothing: every tool is written and searchable, or the 422 lists each bad item."""

        async def write() -> BulkResult:
            specs = await asyncio.to_thread(parse_specs, data.tools, prefix=("tools",))
            result = await registry.write(tenant_of(request), specs, prefix=("tools",))
            return BulkResult(result.created, result.updated, result.unchanged)

        return await idempotency.once(request, "POST /v1/tools/bulk", HTTP_200_OK, write)

    @post(
        "/import/openapi",
        status_code=HTTP_200_OK,
        summary="Import an OpenAPI document's operations as tools",
        guards=[WRITE],
    )
    async def import_openapi(
        self, request: Request[Any, Any, Any], registry: Registry, data: JSONBody[OpenApiImport]
    ) -> ImportedTools:
        """All or nothing: every selected operation becomes a tool, or none does; operations
        that cannot be tools are listed under `skipped` with the reason."""
        errors = data.source_errors()
        if errors:
            raise SpecInvalid(errors)
        document: Any = data.document
        if isinstance(document, str):
            document = await asyncio.to_thread(parse_document, document, "the document")
        if data.url is not None:
            state = request.app.state
            document = await fetch_document(
                state.tool_http, data.url, state.settings.max_body_bytes
            )
        return await import_openapi(
            registry, tenant_of(request), document, data.options(), document_url=data.url
        )

    @get("/", summary="List live tools")
    async def list_tools(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        namespace: Annotated[str | None, QueryParameter(pattern=NAME_PATTERN)] = None,
        tag: Annotated[str | None, QueryParameter()] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> ToolPage:
        page = await registry.list_tools(
            tenant_of(request), namespace=namespace, tag=tag, cursor=cursor, limit=limit
        )
        return ToolPage(page.items, page.next_cursor)

    @get("/search", summary="Find tools by meaning and keywords",
         middleware=[_shed_when_busy])
    async def search_tools(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        q: Annotated[
            str, QueryParameter(min_length=1, max_length=4000, description="What to find.")
        ],
        k: Annotated[int | None, QueryParameter(ge=1, le=MAX_K)] = None,
        namespace: Annotated[str | None, QueryParameter(pattern=NAME_PATTERN)] = None,
        tag: Annotated[
            list[str] | None, QueryParameter(description="Require every tag given.")
        ] = None,
    ) -> SearchResults:
        k = k or request.app.state.settings.search_k
        hits = await registry.search(tenant_of(request), q, k, namespace=namespace, tags=tag or (),
                                     bounded=True)
        return SearchResults(hits)

    @get("/{name:str}", summary="Get a tool's live version")
    async def get_tool(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        name: FromPath[str],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> ToolRecord:
        return await registry.get(tenant_of(request), namespace, name)

    @put("/{name:str}", summary="Replace a tool (makes a new version)", guards=[WRITE])
    async def put_tool(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        name: FromPath[str],
        data: JSONBody[ToolSpec],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> Response[ToolRecord]:
        mismatches = [
            FieldError(f"/{field}", f"is {got!r} but the URL names {want!r}; they must match")
            for field, got, want in (
                ("name", data.name, name),
                ("namespace", data.namespace, namespace),
            )
            if got != want
        ]
        if mismatches:
            raise SpecInvalid(mismatches)
        record, created = await registry.put(tenant_of(request), await checked(data))
        return Response(record, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @delete(
        "/{name:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a tool (versions stay)",
        guards=[WRITE],
    )
    async def delete_tool(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        name: FromPath[str],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> None:
        await registry.delete(tenant_of(request), namespace, name)

    @get("/{name:str}/versions", summary="Every version of a tool, deleted ones included")
    async def list_versions(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        name: FromPath[str],
        namespace: Namespace = DEFAULT_NAMESPACE,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> ToolPage:
        """Oldest first."""
        found = await registry.versions(tenant_of(request), namespace, name)
        return ToolPage(*page_of(found, lambda r: r.version, cursor, limit))

    @get("/{name:str}/versions/{version:int}", summary="One version of a tool")
    async def get_version(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        name: FromPath[str],
        version: Annotated[int, PathParameter(ge=1, le=MAX_VERSION)],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> ToolRecord:
        return await registry.get_version(tenant_of(request), namespace, name, version)

    @get("/{name:str}/examples", summary="A tool's example requests, registered and learnt")
    async def list_examples(
        self,
        request: Request[Any, Any, Any],
        learning: Learnt,
        name: FromPath[str],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> ToolExamples:
        """The examples registered with the tool, and those learnt from use: requests that led
        to a good call of it, with how often each was asked and whether the model had to find
        the tool with `search_tools` (where retrieval missed it)."""
        return await learning.examples(tenant_of(request), namespace, name)

    @delete("/{name:str}/examples/{example_id:int}", status_code=HTTP_204_NO_CONTENT,
            summary="Delete a learned example", guards=[WRITE])
    async def delete_example(
        self,
        request: Request[Any, Any, Any],
        learning: Learnt,
        name: FromPath[str],
        example_id: Annotated[int, PathParameter(ge=1, le=2**63 - 1)],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> None:
        if not await learning.forget(tenant_of(request), namespace, name, example_id):
            raise ExampleNotFound(namespace, name, example_id)

    @delete("/{name:str}/examples", status_code=HTTP_204_NO_CONTENT,
            summary="Delete every learned example of a tool", guards=[WRITE])
    async def delete_examples(
        self,
        request: Request[Any, Any, Any],
        learning: Learnt,
        name: FromPath[str],
        namespace: Namespace = DEFAULT_NAMESPACE,
    ) -> None:
        """Registered examples stay: they change with a new version of the tool."""
        await learning.forget(tenant_of(request), namespace, name)
