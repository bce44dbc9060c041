"""Which tenant a request acts for: the tenant of its API key."""

from __future__ import annotations

from typing import Any

from litestar import Request

from app.auth import ApiKey

DEFAULT_TENANT = "default"


def tenant_of(request: Request[Any, Any, Any]) -> str:
    key: ApiKey = request.auth
    return key.tenant
