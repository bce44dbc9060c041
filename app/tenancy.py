"""Which tenant a request acts for."""

from __future__ import annotations

from typing import Any

from litestar import Request

DEFAULT_TENANT = "default"


def tenant_of(request: Request[Any, Any, Any]) -> str:
    """Every request acts for the default tenant until API keys bind requests to tenants."""
    return DEFAULT_TENANT
