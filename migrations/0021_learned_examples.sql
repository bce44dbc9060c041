-- Retrieval that learns from use: requests that led to a good call of a tool (learned
-- examples), requests a user marked as a wrong call (negatives), feedback on turns, and each
-- tenant's choice to learn or not. All of it per tenant; nothing learnt crosses tenants.
CREATE TABLE learned_examples (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    id               bigserial PRIMARY KEY,
    namespace        text NOT NULL,
    name             text NOT NULL,
    version          integer NOT NULL,          -- the tool version the call was made to
    text             text NOT NULL,
    embedding_model  text NOT NULL,
    embedding        bytea NOT NULL,            -- float32, little-endian
    found_by_search  boolean NOT NULL DEFAULT false,  -- the model found the tool with search_tools
    uses             integer NOT NULL DEFAULT 1,      -- near-duplicates merged into this one
    confirmed        boolean NOT NULL DEFAULT false,  -- a user rated its turn good
    turn_id          text NOT NULL,
    call_id          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX learned_examples_tool ON learned_examples (tenant_id, namespace, name);
CREATE INDEX learned_examples_turn ON learned_examples (turn_id);

CREATE TABLE learned_negatives (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    id               bigserial PRIMARY KEY,
    namespace        text NOT NULL,
    name             text NOT NULL,
    text             text NOT NULL,
    embedding_model  text NOT NULL,
    embedding        bytea NOT NULL,
    turn_id          text NOT NULL,
    call_id          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX learned_negatives_tool ON learned_negatives (tenant_id, namespace, name);

CREATE TABLE turn_feedback (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    turn_id     text PRIMARY KEY REFERENCES turns (id),
    rating      text NOT NULL CHECK (rating IN ('good', 'bad')),
    calls       text[] NOT NULL DEFAULT '{}',   -- empty: every call of the turn
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE retrieval_settings (
    tenant_id   text PRIMARY KEY REFERENCES tenants (id),
    learning    boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Requests for which the model had to find a tool with search_tools before calling it with
-- success (retrieval had missed it): counted per tool, where retrieval fails today.
CREATE TABLE search_finds (
    tenant_id      text NOT NULL REFERENCES tenants (id),
    namespace      text NOT NULL,
    name           text NOT NULL,
    finds          bigint NOT NULL DEFAULT 0,
    last_found_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, name)
);

-- A tenant's own embedding models, fine-tuned on its examples; their weights live under
-- DATA_DIR (`path` is relative to it). At most one is active per tenant; none: the general one.
CREATE TABLE retrieval_jobs (
    tenant_id    text NOT NULL REFERENCES tenants (id),
    id           text PRIMARY KEY,
    status       text NOT NULL CHECK (status IN
                     ('running', 'swapped', 'kept', 'failed')),
    stage        text NOT NULL,
    progress     real NOT NULL DEFAULT 0,
    options      jsonb NOT NULL DEFAULT '{}',
    comparison   jsonb,
    model_id     text,
    error        text,
    owner        text NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX retrieval_jobs_tenant ON retrieval_jobs (tenant_id, created_at);
-- One training job at a time per tenant.
CREATE UNIQUE INDEX retrieval_jobs_one_running ON retrieval_jobs (tenant_id)
    WHERE status = 'running';

CREATE TABLE retrieval_models (
    tenant_id     text NOT NULL REFERENCES tenants (id),
    id            text PRIMARY KEY,
    path          text NOT NULL,
    base_model    text NOT NULL,
    job_id        text NOT NULL REFERENCES retrieval_jobs (id),
    comparison    jsonb NOT NULL,
    active        boolean NOT NULL DEFAULT false,
    activated_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX retrieval_models_one_active ON retrieval_models (tenant_id) WHERE active;
