-- Conversations, their turns, messages and tool calls: written as they happen.

CREATE TABLE conversations (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    id          text PRIMARY KEY,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_tenant ON conversations (tenant_id, created_at);

CREATE TABLE turns (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id),
    status           text NOT NULL CHECK (status IN
                         ('running', 'completed', 'failed', 'interrupted', 'awaiting_approval')),
    mode             text NOT NULL,
    model            text NOT NULL,
    request          jsonb NOT NULL,
    candidates       jsonb NOT NULL DEFAULT '[]',
    plans            jsonb NOT NULL DEFAULT '[]',
    answer           text,
    error            jsonb,
    usage            jsonb NOT NULL DEFAULT '{}',
    owner            text NOT NULL,           -- the replica running it
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX turns_conversation ON turns (conversation_id, started_at);
-- One active turn per conversation, enforced by Postgres itself.
CREATE UNIQUE INDEX turns_one_active ON turns (conversation_id)
    WHERE status IN ('running', 'awaiting_approval');
CREATE INDEX turns_running ON turns (heartbeat_at) WHERE status = 'running';

CREATE TABLE messages (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    id               bigserial PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations (id),
    turn_id          text NOT NULL REFERENCES turns (id),
    role             text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content          text,
    reasoning        text,
    tool_calls       jsonb,
    tool_call_id     text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);

CREATE TABLE tool_calls (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    turn_id          text NOT NULL REFERENCES turns (id),
    id               text NOT NULL,
    conversation_id  text NOT NULL REFERENCES conversations (id),
    step             integer NOT NULL,
    position         integer NOT NULL DEFAULT 0,   -- order within its step, as the model wrote it
    namespace        text,
    name             text NOT NULL,
    version          integer,
    arguments        jsonb,
    raw_arguments    text NOT NULL,
    depends_on       text[] NOT NULL DEFAULT '{}',
    status           text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    result           jsonb,
    error            text,
    error_type       text,
    attempts         integer NOT NULL DEFAULT 0,
    truncated        boolean NOT NULL DEFAULT false,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (turn_id, id)
);
