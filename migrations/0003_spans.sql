-- Trace spans, stored off the request path by a batching span processor.

CREATE TABLE spans (
    tenant_id        text NOT NULL REFERENCES tenants (id),
    trace_id         text NOT NULL,
    span_id          text NOT NULL,
    parent_span_id   text,
    name             text NOT NULL,
    kind             text NOT NULL,
    start_ns         bigint NOT NULL,
    end_ns           bigint NOT NULL,
    status_code      text NOT NULL,
    status_message   text,
    attributes       jsonb NOT NULL DEFAULT '{}',
    events           jsonb NOT NULL DEFAULT '[]',
    links            jsonb NOT NULL DEFAULT '[]',
    -- copied out of the attributes for the trace listing's filters
    conversation_id  text,
    turn_id          text,
    tool_name        text,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX spans_roots ON spans (tenant_id, start_ns DESC) WHERE parent_span_id IS NULL;
CREATE INDEX spans_conversation ON spans (tenant_id, conversation_id) WHERE parent_span_id IS NULL;
CREATE INDEX spans_tool ON spans (tool_name, trace_id) WHERE tool_name IS NOT NULL;

ALTER TABLE turns ADD COLUMN trace_id text;
