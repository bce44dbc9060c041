"""Errors of the tool domain, each with typed fields and a message that says how to fix it.

ToolsError
├── SpecInvalid          one or more fields of one or more specs are wrong (422)
├── ToolNotFound         no live tool (or version) by that name in that namespace (404)
├── ToolExists           create of a name that is already registered (409)
├── ExampleNotFound      no learned example by that id for that tool (404)
├── JobNotFound          no retrieval training job by that id (404)
├── JobConflict          the tenant's embedder is being trained already (409)
├── NothingToTrain       too few examples to train (or to judge) a tenant's embedder (422)
├── NothingToRollBack    the tenant uses the general embedder already (409)
├── TrainingFailed       the training process ended with an error (the job records it)
├── ImportFormatError    a file given to `tools import` cannot be read as tool specs
├── DocumentInvalid      an OpenAPI document cannot be made into tools (422)
├── DocumentUnreachable  an OpenAPI document could not be fetched from its URL (422)
├── EmbeddingError       the embedding model failed to load or encode
├── SearchBusy           too many searches wait on the embedder; retry after a moment (503)
├── SlotUnavailable      Postgres could not be asked for a capped tool's slot (the call fails)
├── SecretKeyMismatch    a stored secret was sealed with a key this process does not have
└── McpError             an MCP server as a tool source
    ├── McpServerNotFound    no MCP server by that name (404)
    ├── McpServerExists      the name (and so the namespace) is taken (409)
    ├── McpUnreachable       the command or URL did not give a working MCP session (502)
    ├── McpCallFailed        the server answered a request with an error
    └── McpListingInvalid    the server listed a tool that cannot be imported (502)
"""

from __future__ import annotations

import msgspec


class FieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    """One problem in a request: a JSON pointer into the body (or the query parameter's name)
    and what is wrong; `index` is the item's position in a bulk request."""

    pointer: str
    message: str
    index: int | None = None
    parameter: str | None = None


class ToolsError(Exception):
    """Base of every error raised by `tools`."""


class SpecInvalid(ToolsError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if first.parameter is not None:  # a query or path parameter, not a spec's field
            super().__init__(f"{first.parameter}: {first.message}{more}")
            return
        where = (
            f"item {first.index} at {first.pointer}" if first.index is not None else first.pointer
        )
        super().__init__(f"{where or '/'}: {first.message}{more}")


class ToolNotFound(ToolsError):
    def __init__(self, namespace: str, name: str, version: int | None = None) -> None:
        self.namespace, self.name, self.version = namespace, name, version
        which = f"version {version} of tool" if version is not None else "tool"
        super().__init__(
            f"{which} {name!r} not found in namespace {namespace!r}; "
            "list tools with GET /v1/tools or pass ?namespace= to look elsewhere"
        )


class ExampleNotFound(ToolsError):
    def __init__(self, namespace: str, name: str, example_id: int) -> None:
        self.namespace, self.name, self.example_id = namespace, name, example_id
        super().__init__(
            f"tool {name!r} in namespace {namespace!r} has no learned example {example_id}; "
            f"GET /v1/tools/{name}/examples lists them"
        )


class JobNotFound(ToolsError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"retrieval training job {job_id!r} not found")


class JobConflict(ToolsError):
    def __init__(self, running: str) -> None:
        self.running = running
        super().__init__(f"job {running!r} is training this tenant's embedder already; "
                         f"follow it with GET /v1/retrieval/jobs/{running}")


class NothingToTrain(ToolsError):
    def __init__(self, examples: int, needed: int) -> None:
        self.examples, self.needed = examples, needed
        super().__init__(
            f"the tenant's tools have {examples} example requests; training needs at least "
            f"{needed}, a fifth of them held out to judge the result: register examples with "
            "the tools, or let retrieval learn them from use")


class NothingToRollBack(ToolsError):
    def __init__(self) -> None:
        super().__init__("the tenant uses the general embedding model already; there is "
                         "nothing to roll back")


class TrainingFailed(ToolsError):
    def __init__(self, code: int, output: str) -> None:
        self.code, self.output = code, output
        super().__init__(f"training ended with exit code {code}: {output}")


class ToolExists(ToolsError):
    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        super().__init__(
            f"tool {name!r} already exists in namespace {namespace!r}; "
            f"PUT /v1/tools/{name} makes a new version"
        )


class ImportFormatError(ToolsError):
    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source, self.line = source, line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class DocumentInvalid(ToolsError):
    """`pointer` is a JSON pointer into the OpenAPI document (not into the request)."""

    def __init__(self, pointer: str, message: str, source: str = "the document") -> None:
        self.pointer, self.message, self.source = pointer, message, source
        super().__init__(f"{source} at {pointer or '/'}: {message}")

    def of(self, source: str) -> DocumentInvalid:
        """The same error, naming where the document came from."""
        return DocumentInvalid(self.pointer, self.message, source)


class DocumentUnreachable(ToolsError):
    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"could not fetch the OpenAPI document at {url}: {message}")


class EmbeddingError(ToolsError):
    def __init__(self, model: str, message: str) -> None:
        self.model = model
        super().__init__(f"embedding model {model!r}: {message}")


class SearchBusy(ToolsError):
    def __init__(self, waiting: int, retry_after_s: int) -> None:
        self.waiting, self.retry_after_s = waiting, retry_after_s
        super().__init__(
            f"{waiting} searches are waiting for the embedding model, as many as this replica "
            f"queues; retry in {retry_after_s} s"
        )


class SlotUnavailable(ToolsError):
    """Postgres could not be asked for a slot of a tool whose concurrency is capped."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool, self.reason = tool, reason
        super().__init__(f"the concurrency cap of tool {tool!r} could not be checked: {reason}")


class SecretKeyMismatch(ToolsError):
    """A sealed secret opens with none of this process's keys."""

    def __init__(self) -> None:
        super().__init__(
            "a stored secret was sealed with a key this process does not have: give every "
            "replica the same SECRET_KEY, and keep the old one in SECRET_KEY_PREVIOUS until "
            "`switchboard secrets rotate` has run")


class McpError(ToolsError):
    """Base of the errors of MCP servers as tool sources."""


class McpServerNotFound(McpError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"MCP server {name!r} not found; list servers with GET /v1/mcp/servers"
        )


class McpServerExists(McpError):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"MCP server {name!r} cannot be registered: {reason}")


class McpUnreachable(McpError):
    """`target` says which server, as a command line or a URL without credentials; `field`
    points at the part of the transport that may not be used (a refused URL or command)."""

    def __init__(self, target: str, reason: str, *, field: str | None = None) -> None:
        self.target, self.reason, self.field = target, reason, field
        super().__init__(f"MCP server {target}: {reason}")


class McpCallFailed(McpError):
    """`error_type` is what a tool call reports: "tool_error", or "bad_output" for a result
    that does not fit the tool's output schema."""

    def __init__(self, target: str, what: str, reason: str, *, error_type: str = "tool_error"):
        self.target, self.error_type = target, error_type
        super().__init__(f"MCP server {target} failed {what}: {reason}")


class McpListingInvalid(McpError):
    def __init__(self, server: str, tool: str, reason: str) -> None:
        self.server, self.tool = server, tool
        super().__init__(
            f"MCP server {server!r} lists tool {tool!r}, which cannot be imported: {reason}; "
            "fix the tool on the server and register or refresh again"
        )
