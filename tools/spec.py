"""The tool spec: what an agent developer registers, and what the registry returns."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

FULL_MATCH_GUARD = r"(?!\n)"


def full_match(pattern: str) -> str:
    """A `^...$` pattern that holds for the whole string in Python too, where `$` also matches
    before a final line break ("tool\n"). JSON Schema (ECMA-262) reads it as before; the API
    document shows it without the guard."""
    return pattern + FULL_MATCH_GUARD


# A tool name must be a valid function name for OpenAI-style APIs; namespaces and tags follow suit.
NAME_PATTERN = full_match(r"^[A-Za-z0-9_-]{1,64}$")
URL_PATTERN = full_match(r"^https?://\S+$")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
DEFAULT_NAMESPACE = "default"

Name = Annotated[
    str, msgspec.Meta(pattern=NAME_PATTERN, description="Letters, digits, _ or -; 1-64.")
]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Description = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
Example = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
MAX_EXAMPLES = 100
"""Example requests per tool: each is embedded, and a hundred say all a tool needs."""
MAX_TAGS = 64


def function_name(text: str) -> str:
    """`math.factorial` -> `math_factorial`: each character a function name cannot hold becomes
    `_`, cut to 64. How names from elsewhere (BFCL, MCP, OpenAPI) are made valid."""
    return _INVALID_NAME_CHARS.sub("_", text)[:64]


def empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


ArgumentName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class ArgumentMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where each argument goes in the request: `{name}` in the URL, the query string, a
    header, a property of the JSON body, or (`body_argument`) the whole body. Arguments the
    map does not name are not sent."""

    path: list[ArgumentName] = []
    query: list[ArgumentName] = []
    header: list[ArgumentName] = []
    body: list[ArgumentName] = []
    body_argument: ArgumentName | None = None

    def names(self) -> list[str]:
        whole = [self.body_argument] if self.body_argument is not None else []
        return [*self.path, *self.query, *self.header, *self.body, *whole]


class HttpExecutor(
    msgspec.Struct, tag="http", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """Call the tool over HTTP: by default the arguments are the JSON body (the query string
    for GET); `arguments` spreads them over path, query, headers and body instead."""

    url: Annotated[str, msgspec.Meta(pattern=URL_PATTERN, description="http(s) URL")]
    method: HttpMethod = "POST"
    headers: dict[str, str] = {}
    arguments: ArgumentMap | msgspec.UnsetType = msgspec.UNSET
    # Write-only: used to sign request bodies; never returned, logged or traced.
    secret: str | msgspec.UnsetType = msgspec.UNSET
    # Write-only: sent on every call like `headers` (API keys); only their names are returned.
    secret_headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class BuiltinExecutor(
    msgspec.Struct, tag="builtin", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """Call a Python callable registered in the service process."""

    function: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ClientExecutor(
    msgspec.Struct, tag="client", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """The frontend runs the call: the turn pauses (`requires_action`) until the caller posts the
    call's output back."""


class McpExecutor(
    msgspec.Struct, tag="mcp", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """Call the tool on a registered MCP server (POST /v1/mcp/servers) by its MCP name."""

    server: Name
    tool: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class ModelExecutor(
    msgspec.Struct, tag="model", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """Ask one of the service's model backends (`MODEL_BACKENDS`): an expert model as a tool.
    The call's arguments are the user message and `system` its instructions; with
    `output_schema` the answer is JSON under that schema, checked before it is returned."""

    backend: Name
    system: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    output_schema: dict[str, Any] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32_768)] = 1024


Executor = HttpExecutor | BuiltinExecutor | ClientExecutor | McpExecutor | ModelExecutor


class ToolPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    idempotent: bool = False
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    requires_approval: bool = False


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tool as registered. `parameters` is a JSON Schema (2020-12) whose root is an object."""

    name: Name
    namespace: Name = DEFAULT_NAMESPACE
    description: Description
    parameters: dict[str, Any] = msgspec.field(default_factory=empty_object_schema)
    output_schema: dict[str, Any] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)] = []
    examples: Annotated[list[Example], msgspec.Meta(max_length=MAX_EXAMPLES)] = []
    executor: Executor | None = None
    policy: ToolPolicy = ToolPolicy()
    learn_from_use: bool = True
    """Keep the requests that led to a good call of this tool as learned examples
    (GET /v1/tools/{name}/examples); false: learn nothing for it."""

    def without_secret(self) -> ToolSpec:
        """The spec as stored and returned: write-only fields removed."""
        executor = self.executor
        if isinstance(executor, HttpExecutor) and (
            executor.secret is not msgspec.UNSET or executor.secret_headers is not msgspec.UNSET
        ):
            public = msgspec.structs.replace(
                executor, secret=msgspec.UNSET, secret_headers=msgspec.UNSET
            )
            return msgspec.structs.replace(self, executor=public)
        return self

    @property
    def secret(self) -> str | None:
        if isinstance(self.executor, HttpExecutor) and isinstance(self.executor.secret, str):
            return self.executor.secret
        return None

    @property
    def secret_headers(self) -> dict[str, str]:
        if isinstance(self.executor, HttpExecutor) and isinstance(
            self.executor.secret_headers, dict
        ):
            return self.executor.secret_headers
        return {}


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
    learn_from_use: bool = True
    has_secret: bool = False
    secret_headers: list[str] = []
    """The names of the executor's write-only headers; their values are never returned."""

    @classmethod
    def of(
        cls,
        spec: ToolSpec,
        version: int,
        created_at: datetime,
        has_secret: bool,
        secret_headers: list[str] | None = None,
    ) -> ToolRecord:
        public = spec.without_secret()
        return cls(
            **{f: getattr(public, f) for f in public.__struct_fields__},
            version=version,
            created_at=created_at,
            has_secret=has_secret,
            secret_headers=sorted(secret_headers or []),
        )

    def spec(self) -> ToolSpec:
        return ToolSpec(**{f: getattr(self, f) for f in ToolSpec.__struct_fields__})
