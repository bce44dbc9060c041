-- Write-only headers of an http executor (API keys for imported APIs), kept beside the
-- signing secret and out of the spec that the API returns.
ALTER TABLE tool_versions ADD COLUMN secret_headers jsonb;
