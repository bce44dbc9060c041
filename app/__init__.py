"""Switchboard: the process — settings, HTTP routes, database, migrations and CLI."""
