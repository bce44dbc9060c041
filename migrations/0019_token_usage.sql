-- Tokens each tenant spent per UTC day on each model backend, counted across replicas and
-- checked against TOKEN_QUOTAS before a turn calls its model.
CREATE TABLE token_usage (
    tenant_id  text NOT NULL REFERENCES tenants (id),
    day        date NOT NULL,
    backend    text NOT NULL,
    tokens     bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, backend)
);
