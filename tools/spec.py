"""The tool spec: what an agent developer registers, and what the registry returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

# A tool name must be a valid function name for OpenAI-style APIs; namespaces and tags follow suit.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DEFAULT_NAMESPACE = "default"

Name = Annotated[
    str, msgspec.Meta(pattern=NAME_PATTERN, description="Letters, digits, _ or -; 1-64.")
]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Description = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
Example = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class HttpExecutor(msgspec.Struct, tag="http", tag_field="kind", frozen=True, kw_only=True):
    """Call the tool by sending its arguments as JSON to a URL."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", description="http(s) URL")]
    method: HttpMethod = "POST"
    headers: dict[str, str] = {}
    # Write-only: used to sign request bodies; never returned, logged or traced.
    secret: str | msgspec.UnsetType = msgspec.UNSET


class BuiltinExecutor(msgspec.Struct, tag="builtin", tag_field="kind", frozen=True, kw_only=True):
    """Call a Python callable registered in the service process."""

    function: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class McpExecutor(msgspec.Struct, tag="mcp", tag_field="kind", frozen=True, kw_only=True):
    """Call the tool on a registered MCP server (POST /v1/mcp/servers) by its MCP name."""

    server: Name
    tool: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


Executor = HttpExecutor | BuiltinExecutor | McpExecutor


class ToolPolicy(msgspec.Struct, frozen=True, kw_only=True):
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    idempotent: bool = False
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    requires_approval: bool = False


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool as registered. `parameters` is a JSON Schema (2020-12) whose root is an object."""

    name: Name
    namespace: Name = DEFAULT_NAMESPACE
    description: Description
    parameters: dict[str, Any] = msgspec.field(default_factory=empty_object_schema)
    output_schema: dict[str, Any] | None = None
    tags: list[Tag] = []
    examples: list[Example] = []
    executor: Executor | None = None
    policy: ToolPolicy = ToolPolicy()

    def without_secret(self) -> ToolSpec:
        if isinstance(self.executor, HttpExecutor) and self.executor.secret is not msgspec.UNSET:
            return msgspec.structs.replace(
                self, executor=msgspec.structs.replace(self.executor, secret=msgspec.UNSET)
            )
        return self

    @property
    def secret(self) -> str | None:
        if isinstance(self.executor, HttpExecutor) and isinstance(self.executor.secret, str):
            return self.executor.secret
        return None


class ToolRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored version of a tool, as the API returns it (the secret is never included)."""

    name: str
    namespace: str
    description: str
    parameters: dict[str, Any]
    output_schema: dict[str, Any] | None
    tags: list[str]
    examples: list[str]
    executor: Executor | None
    policy: ToolPolicy
    version: int
    created_at: datetime
    has_secret: bool = False

    @classmethod
    def of(cls, spec: ToolSpec, version: int, created_at: datetime, has_secret: bool) -> ToolRecord:
        public = spec.without_secret()
        return cls(
            **{f: getattr(public, f) for f in public.__struct_fields__},
            version=version,
            created_at=created_at,
            has_secret=has_secret,
        )

    def spec(self) -> ToolSpec:
        return ToolSpec(**{f: getattr(self, f) for f in ToolSpec.__struct_fields__})
