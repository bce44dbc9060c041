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
