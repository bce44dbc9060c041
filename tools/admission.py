"""What a spec must meet beyond its own shape, against this service's configuration: the model
backends it has, and the destinations its egress policy lets tools reach."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from tools.egress import EgressDenied, EgressPolicy, checked_address
from tools.errors import FieldError, SpecInvalid
from tools.spec import HttpExecutor, ModelExecutor, ToolSpec
from tools.validation import pointer

RESOLVE_TIMEOUT_S = 2.0
"""How long registration waits for a tool's host name to resolve. A name that does not
resolve in time is let through: the call checks it again, as it checks every call."""


class Admission:
    def __init__(self) -> None:
        self.model_backends: list[str] | None = None
        """The service's model backends, which `model` tools may ask (None: not checked)."""
        self.egress: EgressPolicy | None = None
        """Where tools may call (None: not checked at registration)."""

    async def check(self, specs: Sequence[ToolSpec], prefix: tuple[str, ...] = ()) -> None:
        """SpecInvalid naming each spec that asks for a backend this service lacks, or whose
        URL the egress policy refuses. `prefix` points at the list the specs came in (bulk),
        or is empty for one spec."""
        errors = [*self._backend_errors(specs, prefix), *await self._egress_errors(specs, prefix)]
        if errors:
            raise SpecInvalid(sorted(errors, key=lambda e: e.index or 0))

    def _backend_errors(self, specs: Sequence[ToolSpec], prefix: tuple[str, ...]
                        ) -> list[FieldError]:
        known = self.model_backends
        if known is None:
            return []
        return [
            _at(prefix, i, "backend",
                f"model backend {s.executor.backend!r} is not configured; configured "
                f"backends: {', '.join(known)} (MODEL_BACKENDS)")
            for i, s in enumerate(specs)
            if isinstance(s.executor, ModelExecutor) and s.executor.backend not in known
        ]

    async def _egress_errors(self, specs: Sequence[ToolSpec], prefix: tuple[str, ...]
                             ) -> list[FieldError]:
        policy = self.egress
        if policy is None:
            return []
        hosts = {i: url for i, s in enumerate(specs)
                 if isinstance(s.executor, HttpExecutor)
                 and (url := _url(s.executor.url)) is not None}
        unique = {(u.host, u.port) for u in hosts.values()}
        refusals = dict(zip(unique, await asyncio.gather(
            *(_refusal(policy, host, port) for host, port in unique)), strict=True))
        return [_at(prefix, i, "url", reason)
                for i, url in hosts.items()
                if (reason := refusals[(url.host, url.port)]) is not None]


async def _refusal(policy: EgressPolicy, host: str, port: int | None) -> str | None:
    try:
        await asyncio.wait_for(checked_address(policy, host, port), RESOLVE_TIMEOUT_S)
    except EgressDenied as exc:
        return str(exc)
    except (OSError, TimeoutError):
        return None
    return None


def _url(text: str) -> httpx.URL | None:
    """The URL to check; None for one that cannot be parsed (`schema_errors` refuses those)."""
    try:
        return httpx.URL(text)
    except httpx.InvalidURL:
        return None


def _at(prefix: tuple[str, ...], i: int, field: str, message: str) -> FieldError:
    if prefix:
        return FieldError(pointer(*prefix, i, "executor", field), message, index=i)
    return FieldError(pointer("executor", field), message)
