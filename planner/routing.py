"""Routing: a turn that asks for `"model": "auto"` goes to the cheapest backend expected to
answer it well. A router is trained from an eval run: each case's message, and how each backend
did on it (right or not, at what cost). Each backend's chance of answering a request right is
predicted by a small logistic classifier on the message embedding retrieval already computes
(RouteLLM's classifier routers, in their smallest form); its cost is its mean cost per turn in
the run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np

from tools.embed import Vectors

AUTO_MODEL = "auto"
"""The model a turn names to have a router choose its backend."""
L2 = 0.003
"""The classifiers' L2 penalty, chosen by two-fold cross-validation inside the training half
of bench/routing.py's BFCL cases (0.0003 to 0.1 tried)."""
STEPS, RATE = 2000, 0.5


class Objective(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a router aims for: the cheapest backend predicted right at least `min_accuracy`
    of the time, or the most accurate whose predicted cost per turn is at most `max_cost`."""

    min_accuracy: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_cost: Annotated[float, msgspec.Meta(ge=0)] | None = None


class RouterIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    eval_run: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    objective: Objective


class Trained(msgspec.Struct, frozen=True, kw_only=True):
    """What a router learnt from its eval run: for each backend, a classifier's weights over
    the message embedding (the last one its bias) and its mean cost per turn (None when it has
    no price)."""

    backends: list[str]
    cases: int
    weights: list[list[float]]
    cost: list[float | None]


class RouteCandidate(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    success: float
    """Predicted chance of answering right."""
    cost: float | None
    """Predicted cost of the turn; None when the backend has no price."""


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A router's decision for one turn, kept on the turn and in its trace."""

    router: str
    chosen: str
    candidates: list[RouteCandidate]
    why: str
    objective: Objective
    down: list[str] = []
    """Backends the turn could not use (their breakers open, or they failed it)."""

    def without(self, down: str, reason: str) -> Route | None:
        """The decision again without the backend that went down (its breaker open); None
        when no candidate is left."""
        gone = [*self.down, down]
        left = [c for c in self.candidates if c.backend not in gone]
        if not left:
            return None
        chosen, why = _choose(left, self.objective)
        return msgspec.structs.replace(self, chosen=chosen, down=gone,
                                       why=f"{down} is down ({reason}); {why}")


class Router(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    eval_run: str
    objective: Objective
    trained: Trained


class ReadyRouter:
    """A router with its classifiers as one matrix, ready to decide."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.weights = np.array(router.trained.weights, dtype=np.float64)

    def decide(self, query: Vectors, usable: set[str] | None = None) -> Route:
        """The backend for a request whose embedding is `query`, among those `usable` (all,
        when None)."""
        trained = self.router.trained
        success = _sigmoid(self.weights @ np.append(query, 1.0))
        candidates = [
            RouteCandidate(backend=name, success=round(float(success[b]), 4),
                           cost=trained.cost[b])
            for b, name in enumerate(trained.backends) if usable is None or name in usable
        ]
        chosen, why = _choose(candidates, self.router.objective)
        return Route(router=self.router.name, chosen=chosen, candidates=candidates, why=why,
                     objective=self.router.objective)


def _choose(candidates: list[RouteCandidate], objective: Objective) -> tuple[str, str]:
    def price(c: RouteCandidate) -> float:
        return math.inf if c.cost is None else c.cost

    if objective.min_accuracy is not None:
        goal = objective.min_accuracy
        meets = [c for c in candidates if c.success >= goal]
        if meets:
            best = min(meets, key=lambda c: (price(c), -c.success))
            return best.backend, (f"the cheapest backend predicted right at least {goal:.0%} of "
                                  f"the time ({best.success:.0%})")
        best = max(candidates, key=lambda c: (c.success, -price(c)))
        return best.backend, (f"no backend is predicted right {goal:.0%} of the time; the "
                              f"likeliest ({best.success:.0%})")
    limit = objective.max_cost if objective.max_cost is not None else math.inf
    within = [c for c in candidates if price(c) <= limit]
    if within:
        best = max(within, key=lambda c: (c.success, -price(c)))
        return best.backend, (f"the backend likeliest right ({best.success:.0%}) at a predicted "
                              f"cost within {limit:g}")
    best = min(candidates, key=lambda c: (price(c), -c.success))
    return best.backend, f"no backend is predicted to cost at most {limit:g}; the cheapest"


def train(texts: dict[str, str], vectors: dict[str, Vectors],
          outcomes: Sequence[tuple[str, str, bool, float | None]]) -> Trained:
    """From an eval run: each case's embedding by case id, and each outcome as (backend, case
    id, passed, cost). A backend tried more than once on a case (repeats, or two configurations
    on one backend) learns from its share of right answers there."""
    backends = sorted({backend for backend, *_ in outcomes})
    weights, costs = [], []
    for backend in backends:
        mine = [(case, passed, cost) for b, case, passed, cost in outcomes
                if b == backend and case in vectors]
        by_case: dict[str, list[float]] = {}
        for case, passed, _cost in mine:
            by_case.setdefault(case, []).append(float(passed))
        cases = sorted(by_case)
        x = np.array([vectors[c] for c in cases], dtype=np.float64).reshape(len(cases), -1)
        y = np.array([np.mean(by_case[c]) for c in cases])
        weights.append(_fit(x, y).tolist())
        spent = [cost for _case, _passed, cost in mine]
        costs.append(None if not spent or any(c is None for c in spent)
                     else float(np.mean([c for c in spent if c is not None])))
    return Trained(backends=backends, cases=len({c for _, c, *_ in outcomes if c in texts}),
                   weights=weights, cost=costs)


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logistic regression by gradient descent, with an L2 penalty on all but the bias; the
    targets may be shares (a backend right on a case once in two tries)."""
    with_bias = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(with_bias.shape[1])
    if len(x) == 0:
        return w
    penalty = np.ones_like(w)
    penalty[-1] = 0.0
    for _ in range(STEPS):
        gradient = with_bias.T @ (_sigmoid(with_bias @ w) - y) / len(y) + L2 * penalty * w
        w -= RATE * gradient
    return w


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
