"""An MCP tool result as the value or error text the model reads."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import msgspec


class McpToolOutput(msgspec.Struct, frozen=True):
    """What a call returned: `error` is set when the tool reported failure (`isError`)."""

    value: Any = None
    error: str | None = None


def tool_output(result: types.CallToolResult) -> McpToolOutput:
    """`structuredContent` when there is some, else the content items: text as strings,
    anything else (images, resources) as its JSON."""
    items = [_item(block) for block in result.content]
    if result.is_error:
        text = "\n".join(i if isinstance(i, str) else str(i) for i in items)
        return McpToolOutput(error=text or "the tool reported an error and said nothing more")
    if result.structured_content is not None:
        return McpToolOutput(result.structured_content)
    return McpToolOutput(items)


def _item(block: types.ContentBlock) -> Any:
    if isinstance(block, types.TextContent):
        return block.text
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)
