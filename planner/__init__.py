"""Switchboard's turn engine: model client, prompt assembly, plans and the call scheduler."""
