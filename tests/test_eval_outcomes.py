"""A configuration's numbers from its case outcomes, and the frontier drawn from them."""

from __future__ import annotations

import math

import pytest

from planner.evals.frontier import Objectives, pareto, recommend
from planner.evals.outcomes import (
    CaseOutcome,
    ConfigResult,
    Latency,
    Tokens,
    TurnOutcome,
    summarise,
)


def turn(passed: bool, *, expected: int = 1, matched: int | None = None, ms: float = 100.0,
         parallel: bool | None = None, recall: float | None = 1.0, cost: float | None = 0.01,
         status: str = "completed") -> TurnOutcome:
    return TurnOutcome(turn_id="t", trace_id=None, status=status, passed=passed,
                       expected=expected, matched=expected if matched is None else matched,
                       reasons=[], candidates=[], retrieval_recall=recall, parallel=parallel,
                       latency_ms=ms, tokens=Tokens(prompt=100, completion=10, cached=50),
                       cost=cost)


def case(case_id: str, passed: bool, repeat: int = 0, **kwargs: object) -> CaseOutcome:
    return CaseOutcome(config="c", case_id=case_id, repeat=repeat, passed=passed,
                       conversation_id=None, turns=[turn(passed, **kwargs)])  # type: ignore[arg-type]


def test_pass_k_counts_cases_that_passed_every_repeat_and_stderr_is_over_cases() -> None:
    outcomes = [case("a", True, 0), case("a", True, 1), case("a", True, 2),
                case("b", True, 0), case("b", False, 1), case("b", True, 2),
                case("c", False, 0), case("c", False, 1), case("c", False, 2)]
    result = summarise("c", outcomes)
    assert result.cases == 9
    assert result.accuracy == pytest.approx(5 / 9)
    assert result.pass_k == pytest.approx(1 / 3)  # only a passed all three
    means = [1.0, 2 / 3, 0.0]
    mean = sum(means) / 3
    spread = math.sqrt(sum((m - mean) ** 2 for m in means) / 2)
    assert result.stderr == pytest.approx(spread / math.sqrt(3))


def test_one_run_each_has_no_pass_k_and_the_rest_add_up() -> None:
    outcomes = [case("a", True, ms=100, parallel=True),
                case("b", False, expected=2, matched=1, ms=300, parallel=False, recall=0.5),
                case("c", False, matched=0, ms=200, status="failed", recall=None, cost=None)]
    result = summarise("c", outcomes)
    assert result.pass_k is None
    assert result.call_accuracy == pytest.approx(2 / 4)
    assert result.retrieval_recall == pytest.approx(0.75)
    assert result.parallel_share == 0.5
    assert result.failed_turns == 1
    assert (result.latency_ms.p50, result.latency_ms.p95) == (200.0, 300.0)
    assert result.tokens == Tokens(prompt=300, completion=30, cached=150)
    assert result.cost is None  # one case ran on a backend without a price


def test_no_outcomes_yet_is_all_unknown() -> None:
    result = summarise("c", [])
    assert (result.cases, result.accuracy, result.cost, result.stderr) == (0, None, None, None)


def result(name: str, accuracy: float, p95: float, cost: float) -> ConfigResult:
    return ConfigResult(config=name, cases=10, accuracy=accuracy, call_accuracy=None,
                        retrieval_recall=None, parallel_share=None, failed_turns=0,
                        latency_ms=Latency(p50=p95 / 2, p95=p95), tokens=Tokens(), cost=cost,
                        pass_k=None, stderr=None)


RESULTS = [result("big", 0.95, 900, 0.010), result("small", 0.80, 300, 0.001),
           result("worse", 0.79, 400, 0.002), result("mid", 0.90, 600, 0.004),
           result("tie", 0.90, 600, 0.004)]


def test_the_frontier_drops_what_another_beats_on_every_count() -> None:
    assert [r.config for r in pareto(RESULTS)] == ["big", "mid", "tie", "small"]


@pytest.mark.parametrize(("objectives", "chosen"), [
    (Objectives(), "small"),
    (Objectives(min_accuracy=0.85), "mid"),
    (Objectives(min_accuracy=0.85, max_p95_ms=500), None),
    (Objectives(max_cost=0.005, min_accuracy=0.95), None),
    (Objectives(min_accuracy=0.95), "big"),
])
def test_the_recommendation_is_the_cheapest_that_meets_the_objectives(
    objectives: Objectives, chosen: str | None
) -> None:
    found = recommend(RESULTS, objectives)
    assert found.recommended == chosen
    if chosen is None:
        assert found.why.startswith("no configuration meets the objectives (big: ")
