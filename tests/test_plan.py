"""Plans: the schema the model decodes under, the checks before anything runs, references."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from planner.plan import PlanProblem, parse_plan, plan_schema, resolve, topological_order
from tools.spec import ToolRecord, ToolSpec

TOOLS = {"get_city", "get_weather"}


def record(name: str, properties: dict[str, object]) -> ToolRecord:
    spec = ToolSpec(
        name=name,
        description=name,
        parameters={"type": "object", "properties": properties, "required": list(properties)},
    )
    return ToolRecord.of(spec, 1, datetime(2026, 1, 1, tzinfo=UTC), False)


def plan(*steps: dict[str, object]) -> str:
    return json.dumps({"steps": list(steps)})


def test_references_become_dependencies() -> None:
    parsed = parse_plan(
        plan(
            {"id": "s1", "tool": "get_city", "arguments": {"user": "ann"}},
            {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.city"}},
            {"id": "s3", "tool": "get_weather", "arguments": {"city": "Rome"}},
        ),
        TOOLS,
        8,
    )
    assert [(s.id, s.depends_on) for s in parsed.steps] == [("s1", []), ("s2", ["s1"]), ("s3", [])]
    assert topological_order(parsed) == ["s1", "s3", "s2"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"id": "s1", "tool": "rm_rf", "arguments": {}}],
            "step s1 calls unknown tool 'rm_rf'; only these can be called: get_city, get_weather",
        ),
        (
            [{"id": "s1", "tool": "get_weather", "arguments": {"city": "$s9"}}],
            "step s1 refers to $s9, which is not a step of this plan",
        ),
        (
            [{"id": "s1", "tool": "get_weather", "arguments": {"city": "$s1.city"}}],
            "step s1 refers to its own output",
        ),
        (
            [
                {"id": "s1", "tool": "get_weather", "arguments": {"city": "$s2"}},
                {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1"}},
            ],
            "the plan has a dependency cycle among steps s1, s2",
        ),
        (
            [
                {"id": "s1", "tool": "get_weather", "arguments": {}},
                {"id": "s1", "tool": "get_weather", "arguments": {}},
            ],
            "step ids must be unique, got ['s1', 's1']",
        ),
        ([], "the plan has no steps"),
        (
            [
                {"id": "city", "tool": "get_city", "arguments": {}},
                {"id": "s2", "tool": "get_weather", "arguments": {"city": "$city.name"}},
            ],
            "step id 'city' is not of the form s1, s2, ... (s and up to 3 digits), which "
            "references like $s1 name",
        ),
        (
            [{"id": f"s{i}", "tool": "get_weather", "arguments": {}} for i in range(9)],
            "the plan has 9 steps; at most 8 are allowed",
        ),
    ],
)
def test_bad_plans_are_rejected_with_what_to_change(
    steps: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(PlanProblem) as caught:
        parse_plan(json.dumps({"steps": steps}), TOOLS, 8)
    assert str(caught.value) == message


def test_a_plan_that_is_not_json_is_a_problem() -> None:
    with pytest.raises(PlanProblem, match=r"^the plan is not valid JSON of the plan schema"):
        parse_plan("steps: s1", TOOLS, 8)


def test_resolve_substitutes_whole_outputs_and_fields() -> None:
    outputs = {"s1": {"city": "Oslo", "items": [{"id": 7}]}, "s2": 42}
    arguments = {
        "city": "$s1.city",
        "id": "$s1.items.0.id",
        "n": "$s2",
        "plain": "$notref",
        "nested": ["$s2", {"x": "$s1.city"}],
    }
    assert resolve(arguments, outputs) == {
        "city": "Oslo",
        "id": 7,
        "n": 42,
        "plain": "$notref",
        "nested": [42, {"x": "Oslo"}],
    }


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("$s1.town", "$s1 has no field 'town' (fields: city, items)"),
        ("$s1.items.3", "$s1.items has 1 items; index '3' is not one of them"),
        ("$s2.x", "$s2 is a int, not an object with field 'x'"),
    ],
)
def test_a_reference_to_a_missing_field_says_what_is_there(reference: str, message: str) -> None:
    outputs = {"s1": {"city": "Oslo", "items": [{"id": 7}]}, "s2": 42}
    with pytest.raises(LookupError) as caught:
        resolve({"a": reference}, outputs)
    assert caught.value.args[0] == message


def test_the_plan_schema_accepts_good_plans_and_refuses_others() -> None:
    schema = plan_schema(
        [
            ("get_city", record("get_city", {"user": {"type": "string"}})),
            ("get_weather", record("get_weather", {"city": {"type": "string"}})),
        ],
        max_steps=4,
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {
        "steps": [
            {"id": "s1", "tool": "get_city", "arguments": {"user": "ann"}},
            {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.city"}},
        ]
    }
    jsonschema.validate(good, schema)
    for bad in (
        {"steps": [{"id": "s1", "tool": "delete_all", "arguments": {}}]},
        {"steps": [{"id": "s1", "tool": "get_city", "arguments": {"user": 3}}]},
        {"steps": [{"id": "s1", "tool": "get_city", "arguments": {}}]},
        {"steps": [{"id": "x", "tool": "get_city", "arguments": {"user": "a"}}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
