-- Tenants and the versioned tool registry.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id) VALUES ('default');

-- Every version of every tool; rows are never updated or deleted.
CREATE TABLE tool_versions (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    namespace   text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    spec        jsonb NOT NULL,          -- the spec without its secret
    secret      text,                    -- write-only signing secret of an http executor
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, name, version)
);

-- The current state of each tool: its live version (or deletion) and search data.
CREATE TABLE tools (
    tenant_id          text NOT NULL REFERENCES tenants (id),
    namespace          text NOT NULL,
    name               text NOT NULL,
    version            integer NOT NULL,
    description        text NOT NULL,
    tags               text[] NOT NULL DEFAULT '{}',
    deleted_at         timestamptz,
    embedding_model    text NOT NULL,
    embedding_text     text NOT NULL,    -- what `embedding` was computed from
    keyword_text       text NOT NULL,    -- what keyword search matches against
    embedding          vector NOT NULL,
    example_embeddings real[] NOT NULL DEFAULT '{}',   -- n x dim, row-major
    change_id          bigint NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, name),
    FOREIGN KEY (tenant_id, namespace, name, version)
        REFERENCES tool_versions (tenant_id, namespace, name, version)
);
CREATE INDEX tools_change_id ON tools (change_id);
CREATE INDEX tools_live ON tools (tenant_id, namespace, name) WHERE deleted_at IS NULL;
CREATE INDEX tools_tags ON tools USING gin (tags);

-- One number per write transaction, sent with NOTIFY so other replicas load just that change.
CREATE SEQUENCE tool_change_ids;
