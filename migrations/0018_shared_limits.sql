-- Limits that hold across replicas: concurrency caps of tools and rate limits of keys.

-- Running calls of tools with a concurrency cap (policy.max_concurrency), counted across
-- replicas: a call holds one slot of its tool while it runs. A slot whose holder died is free
-- again once its lease (the tool's timeout, and a margin) has passed. Unlogged: slots are
-- moments, not records, and a Postgres crash ends every call anyway.
CREATE UNLOGGED TABLE tool_slots (
    tenant_id   text NOT NULL,
    tool        text NOT NULL,          -- namespace/name: every version shares the cap
    slot        integer NOT NULL,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, tool, slot)
);

-- Requests per API key per minute, counted across replicas (RATE_LIMIT_PER_MINUTE).
CREATE UNLOGGED TABLE rate_windows (
    key           text NOT NULL,
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
