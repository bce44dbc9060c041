-- A turn whose replica died is taken over by another: each takeover is kept with the turn, and
-- a call that was running when its replica died, and could not be repeated, ends `unknown`.
ALTER TABLE turns ADD COLUMN takeovers jsonb NOT NULL DEFAULT '[]';

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check CHECK (status IN
    ('running', 'succeeded', 'failed', 'unknown', 'awaiting_approval', 'awaiting_output'));
