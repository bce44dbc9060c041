"""Switchboard's tool domain: specs, schema checks, the registry store and the search index."""
