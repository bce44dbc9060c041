"""A router's decision on hand-made vectors: each backend's chance predicted by a classifier
trained on the eval cases, then the cheapest backend that meets the objective
(planner/routing.py)."""

from __future__ import annotations

import numpy as np

from planner.routing import Objective, ReadyRouter, Router, train

SINGLE, MULTI = np.eye(2, dtype=np.float32)
TEXTS = {f"s{i}": f"single {i}" for i in range(6)} | {f"m{i}": f"multi {i}" for i in range(6)}
VECTORS = {case: SINGLE if case.startswith("s") else MULTI for case in TEXTS}
# strong is right on everything at 10 a turn; cheap on single-call cases only, at 1.
OUTCOMES = [("strong", case, True, 10.0) for case in TEXTS] + [
    ("cheap", case, case.startswith("s"), 1.0) for case in TEXTS]


def router(objective: Objective) -> ReadyRouter:
    trained = train(TEXTS, VECTORS, OUTCOMES)
    return ReadyRouter(Router(id="rtr_1", name="r", eval_run="run_1", objective=objective,
                              trained=trained))


def test_a_request_like_the_cases_the_cheap_backend_gets_right_goes_to_it() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(SINGLE)
    cheap, strong = route.candidates
    assert (route.chosen, cheap.backend, cheap.cost, strong.backend, strong.cost) == (
        "cheap", "cheap", 1.0, "strong", 10.0)
    assert cheap.success > 0.9 and strong.success > 0.9
    assert route.why.startswith("the cheapest backend predicted right at least 90% of the time")


def test_a_request_like_the_cases_only_the_strong_backend_gets_right_goes_to_it() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(MULTI)
    cheap, strong = route.candidates
    assert route.chosen == "strong"
    assert cheap.success < 0.1 < 0.9 < strong.success


def test_a_cost_ceiling_picks_the_likeliest_backend_within_it() -> None:
    assert router(Objective(max_cost=5.0)).decide(MULTI).chosen == "cheap"
    assert router(Objective(max_cost=50.0)).decide(MULTI).chosen == "strong"


def test_when_no_backend_meets_the_goal_the_likeliest_is_chosen_and_said_so() -> None:
    route = router(Objective(min_accuracy=0.9)).decide(MULTI, usable={"cheap"})
    assert (route.chosen, route.why) == (
        "cheap", "no backend is predicted right 90% of the time; the likeliest (2%)")


def test_training_learns_shares_from_repeats_and_keeps_unknown_costs_unknown() -> None:
    vectors = {"a": SINGLE}
    trained = train({"a": "q"}, vectors, [("x", "a", True, None), ("x", "a", False, None),
                                          ("y", "a", True, 2.0)])
    assert (trained.backends, trained.cases, trained.cost) == (["x", "y"], 1, [None, 2.0])
    x = ReadyRouter(Router(id="r", name="r", eval_run="e", objective=Objective(
        min_accuracy=0.5), trained=trained)).decide(SINGLE).candidates[0]
    assert abs(x.success - 0.5) < 0.01  # right once in two tries
