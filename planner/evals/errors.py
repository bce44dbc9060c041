"""Errors of evals, each saying what and where; app/problems.py says how each reads over HTTP.

    PlannerError
    └── EvalError
        ├── EvalInvalid        a set or run that cannot be taken as sent (names each field)
        ├── EvalSetNotFound    no such set for this tenant
        ├── EvalSetExists      the tenant already has a set of that name
        ├── EvalSetBusy        a set cannot be deleted while a run of it runs
        ├── EvalRunNotFound    no such run for this tenant
        └── EvalConfigUnknown  a frontier or case filter names a configuration the run lacks
"""

from __future__ import annotations

from planner.errors import PlannerError
from tools.errors import FieldError


class EvalError(PlannerError):
    """Base of every error raised by `planner.evals`."""


class EvalInvalid(EvalError):
    def __init__(self, what: str, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        where = f"item {first.index} at {first.pointer}" if first.index is not None \
            else first.pointer
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid {what}: {where}: {first.message}{more}")


class EvalSetNotFound(EvalError):
    def __init__(self, set_id: str) -> None:
        self.set_id = set_id
        super().__init__(f"eval set {set_id!r} not found")


class EvalSetExists(EvalError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an eval set named {name!r} already exists; choose another name or "
                         "delete that set first")


class EvalSetBusy(EvalError):
    def __init__(self, set_id: str, runs: list[str]) -> None:
        self.set_id, self.runs = set_id, runs
        super().__init__(f"eval set {set_id!r} has runs still running ({', '.join(runs)}); "
                         "cancel them (POST /v1/evals/runs/{id}/cancel) or let them finish "
                         "first")


class EvalRunNotFound(EvalError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"eval run {run_id!r} not found")


class EvalConfigUnknown(EvalError):
    def __init__(self, run_id: str, name: str, configs: list[str]) -> None:
        self.run_id, self.name, self.configs = run_id, name, configs
        super().__init__(f"eval run {run_id!r} has no configuration {name!r}; it ran: "
                         f"{', '.join(configs)}")
