"""A router's decision on hand-made vectors: predicted from the eval cases most like the
request, the cheapest backend that meets the objective (planner/routing.py)."""

from __future__ import annotations

import numpy as np

from planner.routing import Objective, ReadyRouter, RouteCandidate, Router, train

SINGLE, MULTI, OTHER = np.eye(3, dtype=np.float32)
TEXTS = {f"s{i}": f"single {i}" for i in range(4)} | {f"m{i}": f"multi {i}" for i in range(4)}
# strong is right on everything at 10 a turn; cheap on single-call cases only, at 1.
OUTCOMES = [("strong", case, True, 10.0) for case in TEXTS] + [
    ("cheap", case, case.startswith("s"), 1.0) for case in TEXTS]


def router(objective: Objective) -> ReadyRouter:
    trained = train(TEXTS, OUTCOMES)
    vectors = np.stack([SINGLE if t.startswith("single") else MULTI for t in trained.texts])
    return ReadyRouter(Router(id="rtr_1", name="r", eval_run="run_1", objective=objective,
                              neighbours=3, trained=trained), vectors)


def test_a_request_like_the_cases_the_cheap_backend_gets_right_goes_to_it() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(SINGLE)
    assert (route.chosen, route.candidates) == ("cheap", [
        RouteCandidate(backend="cheap", success=1.0, cost=1.0),
        RouteCandidate(backend="strong", success=1.0, cost=10.0)])
    assert route.why == "the cheapest backend predicted right at least 90% of the time (100%)"


def test_a_request_like_the_cases_only_the_strong_backend_gets_right_goes_to_it() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(MULTI)
    assert route.chosen == "strong"
    assert [c.success for c in route.candidates] == [0.0, 1.0]


def test_a_cost_ceiling_picks_the_likeliest_backend_within_it() -> None:
    assert router(Objective(max_cost=5.0)).decide(MULTI).chosen == "cheap"
    assert router(Objective(max_cost=50.0)).decide(MULTI).chosen == "strong"


def test_when_no_backend_meets_the_goal_the_likeliest_is_chosen_and_said_so() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(MULTI, usable={"cheap"})
    assert (route.chosen, route.why) == (
        "cheap", "no backend is predicted right 90% of the time; the likeliest (0%)")


def test_training_averages_repeats_and_keeps_unknown_costs_unknown() -> None:
    trained = train({"a": "q"}, [("x", "a", True, None), ("x", "a", False, None),
                                 ("y", "a", True, 2.0)])
    assert (trained.backends, trained.right, trained.cost) == (
        ["x", "y"], [[0.5, 1.0]], [[None, 2.0]])
