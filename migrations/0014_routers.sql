-- Routers trained from eval runs (planner/routers.py): a turn asking for model "auto" goes to
-- the backend its tenant's latest router chooses, and the decision is kept on the turn.
CREATE TABLE routers (
    tenant_id   text NOT NULL REFERENCES tenants (id),
    id          text PRIMARY KEY,
    name        text NOT NULL,
    eval_run    text NOT NULL REFERENCES eval_runs (id),
    objective   jsonb NOT NULL,
    trained     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX routers_latest ON routers (tenant_id, created_at DESC);
ALTER TABLE turns ADD COLUMN route jsonb;
