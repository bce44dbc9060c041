-- The tokens a call of an expert model (a `model` tool) used, and on which backend
-- (tools/outcome.py ModelUsage); NULL for every other call.
ALTER TABLE tool_calls ADD COLUMN usage jsonb;
