"""The optimizer: which configurations no other beats on accuracy, p95 latency and cost at
once (the Pareto frontier), and the cheapest one that meets a tenant's objectives."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from planner.evals.outcomes import ConfigResult


class Objectives(msgspec.Struct, frozen=True, kw_only=True):
    min_accuracy: float | None = None
    max_p95_ms: float | None = None
    max_cost: float | None = None


class Frontier(msgspec.Struct, frozen=True, kw_only=True):
    frontier: list[str]
    recommended: str | None
    why: str


def _point(result: ConfigResult) -> tuple[float, float, float]:
    """(accuracy, p95, cost), each where bigger is worse turned so smaller is better; a missing
    cost counts as free (no price configured), a missing latency as unmeasured (worst)."""
    return (-(result.accuracy or 0.0),
            result.latency_ms.p95 if result.latency_ms.p95 is not None else float("inf"),
            result.cost or 0.0)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto(results: Sequence[ConfigResult]) -> list[ConfigResult]:
    """The configurations no other is at least as good as on all three and better on one,
    most accurate first."""
    points = {r.config: _point(r) for r in results}
    kept = [r for r in results
            if not any(_dominates(points[o.config], points[r.config]) for o in results)]
    return sorted(kept, key=_point)


def _misses(result: ConfigResult, objectives: Objectives) -> list[str]:
    misses = []
    if objectives.min_accuracy is not None and (result.accuracy or 0.0) < objectives.min_accuracy:
        misses.append(f"accuracy {result.accuracy or 0.0:.3f} < {objectives.min_accuracy}")
    p95 = result.latency_ms.p95
    if objectives.max_p95_ms is not None and (p95 is None or p95 > objectives.max_p95_ms):
        misses.append(f"p95 {_ms(p95)} > {objectives.max_p95_ms:g} ms")
    if objectives.max_cost is not None and (result.cost or 0.0) > objectives.max_cost:
        misses.append(f"cost {result.cost} > {objectives.max_cost}")
    return misses


def _ms(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.0f} ms"


def recommend(results: Sequence[ConfigResult], objectives: Objectives) -> Frontier:
    """The frontier, and its cheapest configuration that meets every objective (ties: more
    accurate, then faster); None, saying what each missed, when none does."""
    front = pareto(results)
    names = [r.config for r in front]
    meeting = [r for r in front if not _misses(r, objectives)]
    if not meeting:
        missed = "; ".join(f"{r.config}: {', '.join(_misses(r, objectives))}" for r in front)
        why = f"no configuration meets the objectives ({missed})" if front else "no results yet"
        return Frontier(frontier=names, recommended=None, why=why)
    best = min(meeting, key=lambda r: (r.cost or 0.0, -(r.accuracy or 0.0),
                                       r.latency_ms.p95 or 0.0))
    cost = "unpriced" if best.cost is None else f"{best.cost:.6f}"
    why = (f"{best.config} is the cheapest frontier configuration that meets the objectives "
           f"(accuracy {best.accuracy or 0.0:.3f}, p95 {_ms(best.latency_ms.p95)}, cost per case "
           f"{cost}); {len(meeting)} of the {len(front)} on the frontier meet them")
    return Frontier(frontier=names, recommended=best.config, why=why)
