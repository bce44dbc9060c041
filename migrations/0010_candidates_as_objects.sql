-- A turn's candidate tools as objects, {"function", "namespace", "name", "version"}, instead
-- of positional arrays [function, namespace, name, version].
UPDATE turns SET candidates = (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'function', c ->> 0, 'namespace', c ->> 1, 'name', c ->> 2,
               'version', (c ->> 3)::int) ORDER BY n), '[]'::jsonb)
    FROM jsonb_array_elements(candidates) WITH ORDINALITY AS e(c, n)
) WHERE jsonb_typeof(candidates -> 0) = 'array';
