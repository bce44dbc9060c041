-- The clauses of a long tool description, each embedded on its own (tools/text.py,
-- description_clauses). Rows written before this get theirs at the next start-up.
-- The vectors are raw float32 (n x dim, little-endian): a real[] would be decoded into n x dim
-- Python floats on the way to numpy.
ALTER TABLE tools
    ADD COLUMN clause_texts      text[] NOT NULL DEFAULT '{}',  -- what clause_embeddings came from
    ADD COLUMN clause_embeddings bytea  NOT NULL DEFAULT '';
