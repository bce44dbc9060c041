-- Turns that pause for a person (approval) or for the frontend (client tools), and resume later.

ALTER TABLE turns DROP CONSTRAINT turns_status_check;
ALTER TABLE turns ADD CONSTRAINT turns_status_check CHECK (status IN
    ('running', 'completed', 'failed', 'interrupted', 'awaiting_approval', 'requires_action'));
DROP INDEX turns_one_active;
CREATE UNIQUE INDEX turns_one_active ON turns (conversation_id)
    WHERE status IN ('running', 'awaiting_approval', 'requires_action');
-- W3C traceparent of the turn's span, so a resumed turn continues the same trace.
ALTER TABLE turns ADD COLUMN traceparent text;

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check CHECK (status IN
    ('running', 'succeeded', 'failed', 'awaiting_approval', 'awaiting_output'));
-- When a paused call gives up waiting, and what a person or the frontend decided.
ALTER TABLE tool_calls ADD COLUMN deadline timestamptz;
ALTER TABLE tool_calls ADD COLUMN decision jsonb;
CREATE INDEX tool_calls_waiting ON tool_calls (deadline)
    WHERE status IN ('awaiting_approval', 'awaiting_output') AND decision IS NULL;
