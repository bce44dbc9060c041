-- What a stateless client shows of a conversation, hashed (planner/transcripts.py): a request
-- that repeats a conversation's history continues that conversation.
ALTER TABLE conversations ADD COLUMN transcript_digest text;
CREATE INDEX conversations_transcript ON conversations (tenant_id, transcript_digest)
    WHERE transcript_digest IS NOT NULL;
