-- Eval sets, runs and each case's outcome. The conversations a run holds are tagged with it,
-- so they stay out of the service's listings while every case still links to its turns.

CREATE TABLE eval_sets (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    id          text PRIMARY KEY,
    name        text NOT NULL,
    cases       jsonb NOT NULL,
    case_count  integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE eval_runs (
    tenant_id     text NOT NULL REFERENCES tenants (id),
    id            text PRIMARY KEY,
    set_id        text NOT NULL REFERENCES eval_sets (id),
    request       jsonb NOT NULL,          -- the configurations, repeats, concurrency, executor
    status        text NOT NULL CHECK (status IN
                      ('running', 'completed', 'failed', 'cancelled', 'interrupted')),
    total         integer NOT NULL,        -- cases x configurations x repeats
    error         text,
    owner         text NOT NULL,           -- the replica running it
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX eval_runs_tenant ON eval_runs (tenant_id, created_at);
CREATE INDEX eval_runs_running ON eval_runs (heartbeat_at) WHERE status = 'running';

CREATE TABLE eval_outcomes (
    tenant_id    text NOT NULL REFERENCES tenants (id),
    run_id       text NOT NULL REFERENCES eval_runs (id),
    config       text NOT NULL,
    case_id      text NOT NULL,
    repeat       integer NOT NULL,
    passed       boolean NOT NULL,
    outcome      jsonb NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, config, case_id, repeat)
);

ALTER TABLE conversations ADD COLUMN eval_run text;
