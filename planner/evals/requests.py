"""What a client sends to start an eval run: the set, the configurations to compare, and how."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from planner.records import Mode
from planner.routing import AUTO_MODEL
from tools.errors import FieldError
from tools.spec import full_match
from tools.validation import pointer

ConfigName = Annotated[str, msgspec.Meta(min_length=1, max_length=100,
                                         pattern=full_match(r"^[A-Za-z0-9_.:-]+$"))]


class EvalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One way to run the service: each field unset takes the service's default."""

    name: ConfigName
    model: str | None = None
    """A backend of MODEL_BACKENDS (or "default")."""
    mode: Mode = "auto"
    candidate_k: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    thinking: bool | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None


class RunIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    set: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    configs: Annotated[list[EvalConfig], msgspec.Meta(min_length=1, max_length=16)]
    repeats: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    executor: Literal["mocked", "live"] = "mocked"
    """`mocked` answers every call from the case's `tool_results`; `live` calls the tools, but
    answers a call itself where running it could change something (a tool not marked
    idempotent, one that needs approval, a client tool)."""


def run_errors(run: RunIn, backends: list[str]) -> list[FieldError]:
    """Configuration names must differ, and each model be a configured backend (or "auto",
    which the tenant's router chooses)."""
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for i, config in enumerate(run.configs):
        if config.name in seen:
            errors.append(FieldError(pointer("configs", i, "name"),
                                     f"configuration {config.name!r} is also item "
                                     f"{seen[config.name]}'s; names must differ", index=i))
        seen.setdefault(config.name, i)
        if config.model is not None and config.model not in [*backends, AUTO_MODEL]:
            errors.append(FieldError(pointer("configs", i, "model"),
                                     f"unknown model backend {config.model!r}; configured: "
                                     f"{', '.join(backends)} (or {AUTO_MODEL!r}, for a "
                                     "router's choice)", index=i))
    return errors
