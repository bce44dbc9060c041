"""Routing: a turn that asks for `"model": "auto"` goes to the cheapest backend expected to
answer it well. A router is trained from an eval run: each case's message, and how each backend
did on it (right or not, at what cost). A request's chance on a backend is predicted from the
cases most like it (similarity-weighted, as RouteLLM's simplest router does), on the message
embeddings retrieval already computes."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
import numpy as np

from tools.embed import Vectors

AUTO_MODEL = "auto"
"""The model a turn names to have a router choose its backend."""
NEIGHBOUR_TEMPERATURE = 0.05
"""How sharply the nearest cases count more (cosine units): a case 0.05 less similar weighs
1/e as much."""


class Objective(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a router aims for: the cheapest backend predicted right at least `min_accuracy`
    of the time, or the most accurate whose predicted cost per turn is at most `max_cost`."""

    min_accuracy: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_cost: Annotated[float, msgspec.Meta(ge=0)] | None = None


class RouterIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    eval_run: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    objective: Objective
    neighbours: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    """How many of the run's cases most like a request predict for it."""


class Trained(msgspec.Struct, frozen=True, kw_only=True):
    """What a router learnt from its eval run: for each case, its message, and for each
    backend its share of right answers (NaN where the run did not try it) and its cost."""

    backends: list[str]
    texts: list[str]
    right: list[list[float | None]]
    """None where the run did not try the backend on the case."""
    cost: list[list[float | None]]
    """Cost per turn; None where it is not known (the backend has no price)."""


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


class Router(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    eval_run: str
    objective: Objective
    neighbours: int
    trained: Trained


class ReadyRouter:
    """A router with its cases' vectors, ready to decide."""

    def __init__(self, router: Router, vectors: Vectors) -> None:
        self.router = router
        self.vectors = vectors
        self.right = _array(router.trained.right)
        self.cost = _array(router.trained.cost)

    def decide(self, query: Vectors, usable: set[str] | None = None) -> Route:
        """The backend for a request whose (normalised) embedding is `query`, among those
        `usable` (all, when None)."""
        trained = self.router.trained
        sims = self.vectors @ query
        nearest = np.argsort(-sims)[: self.router.neighbours]
        weights = np.exp((sims[nearest] - sims[nearest].max()) / NEIGHBOUR_TEMPERATURE)
        candidates = []
        for b, name in enumerate(trained.backends):
            if usable is not None and name not in usable:
                continue
            right, cost = self.right[nearest, b], self.cost[nearest, b]
            tried = ~np.isnan(right)
            if not tried.any():
                continue
            success = float(np.average(right[tried], weights=weights[tried]))
            predicted = (None if np.isnan(cost[tried]).any()
                         else float(np.average(cost[tried], weights=weights[tried])))
            candidates.append(RouteCandidate(backend=name, success=round(success, 4),
                                             cost=None if predicted is None
                                             else round(predicted, 8)))
        chosen, why = _choose(candidates, self.router.objective)
        return Route(router=self.router.name, chosen=chosen, candidates=candidates, why=why)


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


def train(texts: dict[str, str], outcomes: list[tuple[str, str, bool, float | None]]
          ) -> Trained:
    """From an eval run: each case's message by case id, and each outcome as (backend, case
    id, passed, cost). A backend tried more than once on a case (repeats, or two configurations
    on one backend) is averaged."""
    backends = sorted({backend for backend, *_ in outcomes})
    cases = sorted({case for _, case, *_ in outcomes if case in texts})
    row = {case: i for i, case in enumerate(cases)}
    column = {name: i for i, name in enumerate(backends)}
    right = np.zeros((len(cases), len(backends)))
    cost = np.zeros((len(cases), len(backends)))
    counts = np.zeros((len(cases), len(backends)))
    unpriced = np.zeros((len(cases), len(backends)), dtype=bool)
    for backend, case, passed, spent in outcomes:
        if case not in row:
            continue
        at = (row[case], column[backend])
        right[at] += passed
        counts[at] += 1
        if spent is None:
            unpriced[at] = True
        else:
            cost[at] += spent
    with np.errstate(invalid="ignore", divide="ignore"):
        right, cost = right / counts, cost / counts
    cost[unpriced] = np.nan
    return Trained(backends=backends, texts=[texts[c] for c in cases],
                   right=_listed(right), cost=_listed(cost))


def _listed(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


def _array(values: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values],
                    dtype=np.float64).reshape(len(values), -1)
