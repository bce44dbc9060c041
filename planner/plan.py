"""One-shot dependency plans: the JSON schema the model decodes under, and the plan's checks.

A step's argument may be a reference to an earlier step's output: the whole string `$s1`, or a
field of it, `$s1.items.0.id`. Dependencies follow from those references.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from tools.spec import ToolRecord

STEP_ID = r"^s[0-9]{1,3}$"
_STEP_ID = re.compile(STEP_ID)
REFERENCE = re.compile(r"^\$(?P<step>s[0-9]{1,3})(?P<path>(\.[A-Za-z0-9_-]+)*)$")
_REFERENCE_SCHEMA = {
    "type": "string",
    "pattern": r"^\$s[0-9]{1,3}(\.[A-Za-z0-9_-]+)*$",
    "description": "The output of an earlier step ($s1) or a field of it ($s1.field.0).",
}


class PlanStep(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tool: str
    arguments: dict[str, Any]
    depends_on: list[str] = []


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[PlanStep]


class PlanProblem(ValueError):
    """A plan that must not run; the message goes back to the model so it can plan again."""


def plan_schema(tools: Sequence[tuple[str, ToolRecord]], max_steps: int) -> dict[str, Any]:
    """{"steps": [...]}: each step names one candidate tool (an enum) with that tool's arguments,
    where any argument may instead be a reference to an earlier step."""
    variants = [
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": STEP_ID},
                "tool": {"type": "string", "enum": [name]},
                "arguments": _referable(record.parameters),
            },
            "required": ["id", "tool", "arguments"],
            "additionalProperties": False,
        }
        for name, record in tools
    ]
    return {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"anyOf": variants}, "maxItems": max_steps}
        },
        "required": ["steps"],
        "additionalProperties": False,
    }


def loose_plan_schema(tools: Sequence[tuple[str, ToolRecord]], max_steps: int) -> dict[str, Any]:
    """The plan's shape with each step's arguments a free object (checked when the step runs):
    for a backend whose grammar compiler refuses the full schema."""
    step = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": STEP_ID},
            "tool": {"type": "string", "enum": [name for name, _record in tools]},
            "arguments": {"type": "object"},
        },
        "required": ["id", "tool", "arguments"],
    }
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": step, "maxItems": max_steps}},
        "required": ["steps"],
    }


def _referable(parameters: dict[str, Any]) -> dict[str, Any]:
    """The tool's parameter schema with every top-level property also accepting a reference."""
    props = parameters.get("properties")
    if not isinstance(props, dict):
        return parameters
    return {
        **parameters,
        "properties": {k: {"anyOf": [v, _REFERENCE_SCHEMA]} for k, v in props.items()},
    }


def parse_plan(raw: str, known_tools: set[str], max_steps: int) -> Plan:
    """Decode and check a plan: each step as `checked_step` does, references to existing
    steps, no cycles, not too long. Raises PlanProblem saying what to change."""
    try:
        plan = msgspec.json.decode(raw, type=Plan)
    except msgspec.DecodeError as exc:
        raise PlanProblem(f"the plan is not valid JSON of the plan schema: {exc}") from exc
    if not plan.steps:
        raise PlanProblem("the plan has no steps")
    if len(plan.steps) > max_steps:
        raise PlanProblem(f"the plan has {len(plan.steps)} steps; at most {max_steps} are allowed")
    steps: list[PlanStep] = []
    for step in plan.steps:
        steps.append(checked_step(step, [s.id for s in steps], known_tools))
    ids = {s.id for s in steps}
    for step in steps:
        for dep in step.depends_on:
            if dep not in ids:
                raise PlanProblem(
                    f"step {step.id} refers to ${dep}, which is not a step of this plan"
                )
    checked = Plan(steps=steps)
    topological_order(checked)
    return checked


def checked_step(step: PlanStep, earlier: list[str], known_tools: set[str]) -> PlanStep:
    """The checks one step needs only the steps before it for: an id of the form s1 not used
    before, a known tool, no reference to itself. The step with `depends_on` read from its
    references (steps it refers to may still come later). Raises PlanProblem."""
    if not _STEP_ID.fullmatch(step.id):
        # A backend that does not enforce the schema may send any id, and a reference to it
        # would then pass as a plain string argument.
        raise PlanProblem(f"step id {step.id!r} is not of the form s1, s2, ... (s and up to "
                          "3 digits), which references like $s1 name")
    if step.id in earlier:
        raise PlanProblem(f"step ids must be unique, got {[*earlier, step.id]}")
    if step.tool not in known_tools:
        raise PlanProblem(
            f"step {step.id} calls unknown tool {step.tool!r}; "
            f"only these can be called: {', '.join(sorted(known_tools))}"
        )
    deps = sorted(references(step.arguments))
    if step.id in deps:
        raise PlanProblem(f"step {step.id} refers to its own output")
    return msgspec.structs.replace(step, depends_on=deps)


def references(value: Any) -> set[str]:
    """Step ids referred to anywhere inside an argument value."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        return {match["step"]} if match else set()
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()


def topological_order(plan: Plan) -> list[str]:
    """Step ids in an order that respects dependencies; a cycle is a PlanProblem naming it."""
    deps = {s.id: set(s.depends_on) for s in plan.steps}
    order: list[str] = []
    ready = sorted(s for s, d in deps.items() if not d)
    while ready:
        current = ready.pop(0)
        order.append(current)
        for step, needs in deps.items():
            if current in needs:
                needs.discard(current)
                if not needs and step not in order and step not in ready:
                    ready.append(step)
    if len(order) != len(deps):
        stuck = sorted(set(deps) - set(order))
        raise PlanProblem(f"the plan has a dependency cycle among steps {', '.join(stuck)}")
    return order


def resolve(value: Any, outputs: dict[str, Any]) -> Any:
    """The argument value with each reference replaced by the referred step's output."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value)
        if not match:
            return value
        return _lookup(outputs[match["step"]], match["step"], match["path"])
    if isinstance(value, dict):
        return {k: resolve(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, outputs) for v in value]
    return value


def _lookup(output: Any, step: str, path: str) -> Any:
    current = output
    walked = f"${step}"
    for part in [p for p in path.split(".") if p]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise LookupError(_missing(walked, part, current))
        walked += f".{part}"
    return current


def _missing(walked: str, part: str, current: Any) -> str:
    if isinstance(current, dict):
        return f"{walked} has no field {part!r} (fields: {', '.join(map(str, current)) or 'none'})"
    if isinstance(current, list):
        return f"{walked} has {len(current)} items; index {part!r} is not one of them"
    return f"{walked} is a {type(current).__name__}, not an object with field {part!r}"
