-- Example vectors as raw float32 bytes (n x dim, little-endian), the encoding clause vectors
-- have had since 0008: one encoding for every matrix of a tool's search data. float4send gives
-- each value's bytes big-endian; they are reversed into little-endian order.
ALTER TABLE tools ADD COLUMN example_bytes bytea NOT NULL DEFAULT '';
UPDATE tools SET example_bytes = (
    SELECT string_agg(substring(b FROM 4 FOR 1) || substring(b FROM 3 FOR 1)
                      || substring(b FROM 2 FOR 1) || substring(b FROM 1 FOR 1), ''::bytea
                      ORDER BY e.n)
    FROM unnest(example_embeddings) WITH ORDINALITY AS e(x, n), float4send(e.x) AS b
) WHERE cardinality(example_embeddings) > 0;
ALTER TABLE tools DROP COLUMN example_embeddings;
ALTER TABLE tools RENAME COLUMN example_bytes TO example_embeddings;
