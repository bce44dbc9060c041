"""MCP servers as tool sources: transports, live sessions, importing tools, and calling them."""
