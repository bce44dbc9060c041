-- Interrupted turns kept their error as {"type", "message"}, which does not read back as the
-- problem a failed turn's error is (GET /v1/turns/{id} answered 500); now they keep one.
UPDATE turns SET error = jsonb_build_object(
    'type', '/problems/turn-interrupted', 'title', 'Turn interrupted', 'status', 503,
    'detail', 'the process running this turn stopped before it finished; send the message '
              'again to retry')
WHERE status = 'interrupted' AND error ? 'message' AND NOT error ? 'title';
