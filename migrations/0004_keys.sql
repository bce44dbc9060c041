-- API keys (stored only as hashes) and idempotency records.

CREATE TABLE api_keys (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    id          text PRIMARY KEY,
    key_hash    text NOT NULL UNIQUE,           -- sha256 of the whole key
    role        text NOT NULL CHECK (role IN ('admin', 'developer', 'chat', 'viewer')),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- A request sent with an Idempotency-Key header: its first result, replayed to retries.
CREATE TABLE idempotency_keys (
    tenant_id      text NOT NULL REFERENCES tenants (id),
    key            text NOT NULL,
    route          text NOT NULL,
    request_hash   text NOT NULL,
    status         integer,                      -- null while the first request runs
    response       jsonb,
    turn_id        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, route, key)
);
