"""The overhead benchmark's numbers: what one turn yields, its summary per way, and the
Markdown written to bench/BENCHMARKS.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np

TRACING_MARKS = ("<!-- overhead-tracing:begin -->", "<!-- overhead-tracing:end -->")
VERSUS_MARKS = ("<!-- overhead-langgraph:begin -->", "<!-- overhead-langgraph:end -->")
TARGET_TRACING = 0.05
TARGET_VERSUS = 1 / 5
TARGET_MEDIAN_MS = 2.0
BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED = 1000, 20250101


class Clocks(msgspec.Struct, frozen=True):
    """Wall (perf_counter) and process CPU, in nanoseconds."""

    wall: int
    cpu: int

    @classmethod
    def now(cls) -> Clocks:
        return cls(time.perf_counter_ns(), time.process_time_ns())

    def since(self, start: Clocks) -> Clocks:
        return Clocks(self.wall - start.wall, self.cpu - start.cpu)


NO_TIME = Clocks(0, 0)


class TurnSample(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[Clocks]
    """Model call to model call, STEPS of them."""
    turn: Clocks
    """The whole turn: start_turn + run_turn, or ainvoke."""
    before: Clocks
    """Turn start to the first model call (Switchboard: turn row, history, retrieval)."""
    after: Clocks
    """The last model call (the answer) to the turn's end."""
    embed_ns: int = 0
    """Wall time in the embedder (retrieval's query embedding)."""
    spans: Clocks = NO_TIME
    """Draining the span queue after the turn (off the request path)."""
    postgres_cpu_ns: int = 0
    """CPU of the Postgres server processes during the turn and its span writes."""


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    postgres: str
    """Server version and its durability settings."""
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    """The 1-minute load average before and the highest seen during the run."""



# -- summaries ----------------------------------------------------------------------------------


TITLES = {
    "sb-off": "Switchboard, tracing off",
    "sb-on": "Switchboard, tracing on",
    "sb-capture": "Switchboard, tracing on + content",
    "sb-steps": "Switchboard, tracing on, DURABLE_STEPS=true",
    "lg-pg": "LangGraph + AsyncPostgresSaver (durability async, its default)",
    "lg-pg-sync": "LangGraph + AsyncPostgresSaver (durability sync)",
    "lg-none": "LangGraph, no checkpointer",
    "sb-mem": "Switchboard, no persistence (MemoryTurnStore), tracing off",
    "sb-mem-on": "Switchboard, no persistence (MemoryTurnStore), tracing on",
}
"""Ways by key; a key on Postgres is `way:mode`, the mode naming how commits are made."""
NO_PERSISTENCE = ("lg-none", "sb-mem", "sb-mem-on")
"""Ways without persistence, compared with LangGraph's without a checkpointer."""


def title(key: str) -> str:
    way, _, mode = key.partition(":")
    return f"{TITLES[way]}, {mode} commits" if mode else TITLES[way]


def modes(keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(k.partition(":")[2] for k in keys if ":" in k))


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Per step unless named per turn; nanoseconds."""

    wall_p50: float
    wall_p99: float
    wall_mean: float
    cpu_p50: float
    cpu_p99: float
    cpu_mean: float
    spans_cpu: float
    """Span writes' CPU per step (off the request path)."""
    postgres_cpu: float
    """Postgres server CPU per step: the whole turn's, spread over its steps."""
    turn_wall_p50: float
    turn_wall_p99: float
    turn_cpu_p50: float
    before_p50: float
    after_p50: float
    embed_p50: float
    steps: int
    """Steps measured."""
    steps_per_turn: int

    @property
    def amortized(self) -> float:
        """The median turn without the query embedding, per step."""
        return (self.turn_wall_p50 - self.embed_p50) / self.steps_per_turn


def summarize(samples: list[TurnSample]) -> Summary:
    wall = np.array([s.wall for t in samples for s in t.steps], dtype=float)
    cpu = np.array([s.cpu for t in samples for s in t.steps], dtype=float)
    turn = np.array([t.turn.wall for t in samples], dtype=float)

    def p50(values: list[int]) -> float:
        return float(np.median(values))

    return Summary(
        wall_p50=float(np.median(wall)), wall_p99=float(np.percentile(wall, 99)),
        wall_mean=float(wall.mean()), cpu_p50=float(np.median(cpu)),
        cpu_p99=float(np.percentile(cpu, 99)), cpu_mean=float(cpu.mean()),
        spans_cpu=sum(t.spans.cpu for t in samples) / len(wall),
        postgres_cpu=sum(t.postgres_cpu_ns for t in samples) / len(wall),
        turn_wall_p50=float(np.median(turn)), turn_wall_p99=float(np.percentile(turn, 99)),
        turn_cpu_p50=p50([t.turn.cpu for t in samples]),
        before_p50=p50([t.before.wall for t in samples]),
        after_p50=p50([t.after.wall for t in samples]),
        embed_p50=p50([t.embed_ns for t in samples]), steps=len(wall),
        steps_per_turn=len(samples[0].steps),
    )


class Medians:
    """Ratios of per-step medians between ways, each with a 95% interval from resampling whole
    turns (the steps of one turn are not independent of each other)."""

    def __init__(self, samples: dict[str, list[TurnSample]]) -> None:
        self.samples = samples
        self.rng = np.random.default_rng(BOOTSTRAP_SEED)
        self._resampled: dict[tuple[str, str], np.ndarray] = {}

    def ratio(self, key: str, base: str, clock: Literal["wall", "cpu"]) -> tuple[float, ...]:
        """(ratio, low, high) of `key`'s median step to `base`'s."""
        point = self._median(key, clock) / self._median(base, clock)
        spread = self._bootstrap(key, clock) / self._bootstrap(base, clock)
        low, high = np.percentile(spread, [2.5, 97.5])
        return point, float(low), float(high)

    def _steps(self, key: str, clock: str) -> np.ndarray:
        """Turns x steps."""
        return np.array([[getattr(s, clock) for s in t.steps] for t in self.samples[key]],
                        dtype=float)

    def _median(self, key: str, clock: str) -> float:
        return float(np.median(self._steps(key, clock)))

    def _bootstrap(self, key: str, clock: str) -> np.ndarray:
        if (key, clock) not in self._resampled:
            steps = self._steps(key, clock)
            turns = self.rng.integers(0, len(steps), size=(BOOTSTRAP_ROUNDS, len(steps)))
            drawn = steps[turns].reshape(BOOTSTRAP_ROUNDS, -1)
            self._resampled[key, clock] = np.median(drawn, axis=1)
        return self._resampled[key, clock]


# -- tables and verdicts ------------------------------------------------------------------------


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _relative(value: float, base: float) -> str:
    return f"{value / base - 1:+.1%}"


def _change(ratio: tuple[float, ...]) -> str:
    point, low, high = (r - 1 for r in ratio)
    return f"{point:+.1%} ({low:+.1%}…{high:+.1%})"


def _times(ratio: tuple[float, ...]) -> str:
    point, low, high = ratio
    return f"{point:.2f} ({low:.2f}…{high:.2f})"


def _met(ok: bool) -> str:
    return "meets" if ok else "misses"


def tracing_pairs(keys: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """(label, tracing off, the ways with tracing on) for each commit mode, and without
    persistence."""
    pairs = [(f"{mode} commits", f"sb-off:{mode}", [f"sb-on:{mode}", f"sb-capture:{mode}"])
             for mode in modes(keys)]
    if "sb-mem" in keys and "sb-mem-on" in keys:
        pairs.append(("no persistence", "sb-mem", ["sb-mem-on"]))
    return pairs


def tracing_table(summaries: dict[str, Summary], medians: Medians) -> list[str]:
    rows = []
    for _, off, ons in tracing_pairs(list(summaries)):
        base = summaries[off]
        for on in ons:
            s = summaries[on]
            rows.append([
                title(on), _change(medians.ratio(on, off, "wall")),
                _change(medians.ratio(on, off, "cpu")),
                _relative(s.wall_p99, base.wall_p99), _relative(s.cpu_p99, base.cpu_p99),
                _relative(s.cpu_mean + s.spans_cpu, base.cpu_mean + base.spans_cpu),
            ])
    return _table(["way, against tracing off", "wall p50", "CPU p50", "wall p99", "CPU p99",
                   "CPU mean + span writes"], rows)


def steps_table(summaries: dict[str, Summary], keys: Sequence[str]) -> list[str]:
    rows = [[title(k), str(summaries[k].steps), ms(summaries[k].wall_p50),
             ms(summaries[k].wall_p99), ms(summaries[k].cpu_p50), ms(summaries[k].cpu_p99),
             ms(summaries[k].spans_cpu)] for k in keys]
    return _table(["way", "steps", "wall p50", "wall p99", "CPU p50", "CPU p99",
                   "span writes CPU/step"], rows)


def tracing_verdicts(summaries: dict[str, Summary], medians: Medians) -> list[str]:
    found = []
    for label, off_key, (on_key, *_) in tracing_pairs(list(summaries)):
        off, on = summaries[off_key], summaries[on_key]
        added = medians.ratio(on_key, off_key, "wall")[0] - 1
        cpu = medians.ratio(on_key, off_key, "cpu")[0] - 1
        total = (on.cpu_mean + on.spans_cpu) / (off.cpu_mean + off.spans_cpu) - 1
        found.append(
            f"- {label}: tracing on adds {added:+.1%} to the median step "
            f"({_met(added <= TARGET_TRACING)} the {TARGET_TRACING:.0%} target), {cpu:+.1%} "
            f"to its CPU ({_met(cpu <= TARGET_TRACING)}), {total:+.1%} to mean CPU per step "
            "with the span writes counted."
        )
    return found


def _versus_row(summaries: dict[str, Summary], medians: Medians, key: str,
                base: str) -> list[str]:
    s = summaries[key]
    return [title(key), ms(s.wall_p50), ms(s.wall_p99), ms(s.cpu_p50), ms(s.cpu_p99),
            ms(s.postgres_cpu), _times(medians.ratio(key, base, "wall")),
            _times(medians.ratio(key, base, "cpu")), ms(s.amortized),
            f"{s.amortized / summaries[base].amortized:.2f}"]


_VERSUS_HEADER = ["way", "wall p50", "wall p99", "CPU p50", "CPU p99",
                  "Postgres server CPU/step", "wall p50 ratio", "CPU p50 ratio",
                  "(turn - embedding) / steps", "its ratio"]


def versus_table(summaries: dict[str, Summary], medians: Medians) -> list[str]:
    """Ways on Postgres, each against LangGraph + AsyncPostgresSaver with the same commits."""
    rows = [_versus_row(summaries, medians, f"{way}:{mode}", f"lg-pg:{mode}")
            for mode in modes(list(summaries))
            for way in ("sb-off", "sb-on", "sb-steps", "lg-pg", "lg-pg-sync")]
    return _table(_VERSUS_HEADER, rows)


def memory_table(summaries: dict[str, Summary], medians: Medians) -> list[str]:
    """Ways without persistence, against LangGraph without a checkpointer."""
    rows = [_versus_row(summaries, medians, key, "lg-none")
            for key in NO_PERSISTENCE if key in summaries]
    return _table(_VERSUS_HEADER, rows)


def turn_table(summaries: dict[str, Summary]) -> list[str]:
    rows = [[title(key), ms(s.turn_wall_p50), ms(s.turn_wall_p99), ms(s.turn_cpu_p50),
             ms(s.before_p50), ms(s.embed_p50), ms(s.after_p50)]
            for key, s in summaries.items()]
    return _table(["way (per turn)", "wall p50", "wall p99", "CPU p50",
                   "start to 1st model call p50", "of which embedding p50",
                   "last model call to end p50"], rows)


def versus_verdicts(summaries: dict[str, Summary]) -> list[str]:
    found = []
    for mode in modes(list(summaries)):
        lg = summaries[f"lg-pg:{mode}"]
        for way in ("sb-off", "sb-on", "sb-steps"):
            s = summaries[f"{way}:{mode}"]
            ratio = s.wall_p50 / lg.wall_p50
            found.append(
                f"- {title(f'{way}:{mode}')}: median step {ms(s.wall_p50)} ms "
                f"({_met(s.wall_p50 <= TARGET_MEDIAN_MS * 1e6)} the {TARGET_MEDIAN_MS:g} ms "
                f"target), {ratio:.2f}x LangGraph's with its checkpointer "
                f"({_met(ratio <= TARGET_VERSUS)} the <= {TARGET_VERSUS:.2f}x target); "
                f"CPU {s.cpu_p50 / lg.cpu_p50:.2f}x."
            )
    none = summaries.get("lg-none")
    for key in ("sb-mem", "sb-mem-on"):
        if none is not None and key in summaries:
            s = summaries[key]
            found.append(
                f"- {title(key)}: median step {ms(s.wall_p50)} ms, "
                f"{s.wall_p50 / none.wall_p50:.2f}x LangGraph's without a checkpointer; "
                f"CPU {s.cpu_p50 / none.cpu_p50:.2f}x."
            )
    return found


# -- the Markdown -------------------------------------------------------------------------------


def versions() -> str:
    names = ("langgraph", "langgraph-prebuilt", "langgraph-checkpoint-postgres",
             "langchain-core", "psycopg", "asyncpg", "opentelemetry-sdk")
    found = [f"{n} {importlib.metadata.version(n)}" for n in names]
    return f"Python {platform.python_version()}; " + ", ".join(found)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores CPU ({model}, {platform.machine()})"


def preamble(command: str, turns: int, warmup: int, environment: Environment,
             steps_per_turn: int) -> list[str]:
    return [
        f"Command: `{command}` on {date.today().isoformat()}; {machine()}; "
        f"{environment.postgres}; {versions()}.",
        f"{turns} measured turns per way of {steps_per_turn} steps each (after {warmup} "
        f"warm-ups), ways interleaved turn by turn; {environment.seconds:.0f} s in all; load "
        f"average {environment.load[0]:.1f} before, at most {environment.load[1]:.1f} during. "
        "Times in ms. A step is one model call + one tool call + the writes for them; "
        "\"durable\" commits wait for the WAL flush (the default), \"no-wait\" ones run with "
        "`synchronous_commit = off`; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} for the embedder.", "",
    ]


def report(samples: dict[str, list[TurnSample]], head: list[str]) -> tuple[str, str]:
    """The generated blocks of the tracing section and of the LangGraph section."""
    summaries = {key: summarize(got) for key, got in samples.items()}
    medians = Medians(samples)
    switchboard = [k for k in summaries if k.startswith("sb-")]
    tracing = [TRACING_MARKS[0], *head, "Per step:", "", *steps_table(summaries, switchboard),
               "", "Tracing's cost: medians' change with a 95% interval (turns resampled), "
               "p99s' and means' change as measured:", "", *tracing_table(summaries, medians),
               "", *tracing_verdicts(summaries, medians), TRACING_MARKS[1]]
    versus = [VERSUS_MARKS[0], *head, "Per step; ratios of medians (95% interval) are to "
              "LangGraph + AsyncPostgresSaver (durability async) with the same commits:", "",
              *versus_table(summaries, medians), "", "Without persistence; ratios of medians "
              "(95% interval) are to LangGraph, no checkpointer:", "",
              *memory_table(summaries, medians), "", "Per turn:", "", *turn_table(summaries),
              "", *versus_verdicts(summaries), VERSUS_MARKS[1]]
    return "\n".join(tracing), "\n".join(versus)
