-- MCP servers registered as tool sources; their tools live in the registry under the
-- namespace named like the server.

CREATE TABLE mcp_servers (
    tenant_id       text NOT NULL REFERENCES tenants (id),
    name            text NOT NULL,           -- also the namespace its tools are imported into
    transport       jsonb NOT NULL,          -- holds write-only env and header values
    created_at      timestamptz NOT NULL DEFAULT now(),
    refreshed_at    timestamptz,
    refresh_status  text CHECK (refresh_status IN ('ok', 'failed')),
    refresh_error   text,
    PRIMARY KEY (tenant_id, name)
);
