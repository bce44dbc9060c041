-- Every event of every turn, as it was streamed, so a client that lost its stream can read what
-- it missed from any replica (GET /v1/turns/{id}/events with Last-Event-ID). `run` counts the
-- turn's runs (its start, each resume, each takeover); `seq` the events of one run.
CREATE TABLE turn_events (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    turn_id     text NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    run         integer NOT NULL,
    seq         integer NOT NULL,
    type        text NOT NULL,
    data        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, run, seq)
);
CREATE INDEX turn_events_created ON turn_events (created_at);
