"""HTTP routes: thin layers that parse, call one function of `tools/` or `planner/`, and reply."""
