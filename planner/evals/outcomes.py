"""What a run keeps of each case it ran, and the numbers a configuration gets from them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

import msgspec

from planner.evals.scoring import Reason


class Tokens(msgspec.Struct, frozen=True, kw_only=True):
    prompt: int = 0
    completion: int = 0
    cached: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(prompt=self.prompt + other.prompt,
                      completion=self.completion + other.completion,
                      cached=self.cached + other.cached)


class TurnOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One turn of a case: how it scored, and where to read what it did."""

    turn_id: str | None
    trace_id: str | None
    status: str
    passed: bool
    expected: int
    matched: int
    reasons: list[Reason]
    candidates: list[str]
    """The tools the turn offered the model (retrieval's picks, and any `search_tools` found)."""
    retrieval_recall: float | None
    """Share of the expected tools among the candidates; None when none is expected."""
    parallel: bool | None
    """For 2+ expected calls: whether the turn dispatched its calls together (in one reply,
    or as plan steps none of which waited for another)."""
    latency_ms: float
    tokens: Tokens
    cost: float | None


class CaseOutcome(msgspec.Struct, frozen=True, kw_only=True):
    config: str
    case_id: str
    repeat: int
    passed: bool
    conversation_id: str | None
    turns: list[TurnOutcome]
    tags: list[str] = []

    @property
    def reasons(self) -> list[Reason]:
        return [r for t in self.turns for r in t.reasons]


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    p50: float | None
    p95: float | None


class ConfigResult(msgspec.Struct, frozen=True, kw_only=True):
    """A configuration's numbers over the cases it ran (every repeat counted)."""

    config: str
    cases: int
    accuracy: float | None
    call_accuracy: float | None
    retrieval_recall: float | None
    parallel_share: float | None
    failed_turns: int
    latency_ms: Latency
    """Per turn."""
    tokens: Tokens
    """Summed over the run."""
    cost: float | None
    """Mean per case; None when the backend has no price."""
    pass_k: float | None
    """With repeats: the share of cases that passed every one of their k runs (pass^k)."""
    stderr: float | None
    """The standard error of `accuracy` over cases."""


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(config: str, outcomes: Sequence[CaseOutcome]) -> ConfigResult:
    turns = [t for o in outcomes for t in o.turns]
    expected = sum(t.expected for t in turns)
    latencies = [t.latency_ms for t in turns]
    costs = [sum(t.cost for t in o.turns if t.cost is not None) for o in outcomes
             if all(t.cost is not None for t in o.turns)]
    return ConfigResult(
        config=config,
        cases=len(outcomes),
        accuracy=_mean([float(o.passed) for o in outcomes]),
        call_accuracy=sum(t.matched for t in turns) / expected if expected else None,
        retrieval_recall=_mean([t.retrieval_recall for t in turns
                                if t.retrieval_recall is not None]),
        parallel_share=_mean([float(t.parallel) for t in turns if t.parallel is not None]),
        failed_turns=sum(t.status != "completed" for t in turns),
        latency_ms=Latency(p50=percentile(latencies, 0.5), p95=percentile(latencies, 0.95)),
        tokens=sum((t.tokens for t in turns), Tokens()),
        cost=_mean(costs) if outcomes and len(costs) == len(outcomes) else None,
        pass_k=_pass_k(outcomes),
        stderr=_stderr(outcomes),
    )


def _by_case(outcomes: Sequence[CaseOutcome]) -> dict[str, list[bool]]:
    runs: dict[str, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        runs[outcome.case_id].append(outcome.passed)
    return runs


def _pass_k(outcomes: Sequence[CaseOutcome]) -> float | None:
    runs = _by_case(outcomes)
    if not runs or max(len(r) for r in runs.values()) < 2:
        return None
    return statistics.fmean(float(all(r)) for r in runs.values())


def _stderr(outcomes: Sequence[CaseOutcome]) -> float | None:
    """Over cases (repeats of a case averaged first), so repeats do not shrink it falsely."""
    means = [statistics.fmean(map(float, r)) for r in _by_case(outcomes).values()]
    if len(means) < 2:
        return None
    return statistics.stdev(means) / math.sqrt(len(means))
