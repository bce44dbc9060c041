"""A run written for people: a Markdown report, a chart of accuracy against cost and against
p95 latency with the frontier marked, and the cases that changed between two runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from planner.evals.frontier import Objectives, pareto, recommend
from planner.evals.outcomes import CaseOutcome, ConfigResult
from planner.evals.service import RunReport

VIEWER = "/viewer#trace="


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: RunReport, failing: Sequence[CaseOutcome], chart_name: str) -> str:
    front = recommend(report.results, Objectives())
    lines = [f"# Eval run {report.id}", "",
             f"Set `{report.set}`; {report.status}; {report.progress.done} of "
             f"{report.progress.total} cases run.", "",
             "| config | cases | accuracy | ± | call accuracy | retrieval recall | parallel | "
             "failed turns | p50 ms | p95 ms | tokens in/out | cost per case | pass^k |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        mark = " (frontier)" if r.config in front.frontier else ""
        lines.append(
            f"| {r.config}{mark} | {r.cases} | {_number(r.accuracy)} | {_number(r.stderr)} | "
            f"{_number(r.call_accuracy)} | {_number(r.retrieval_recall)} | "
            f"{_number(r.parallel_share)} | {r.failed_turns} | {_number(r.latency_ms.p50, 1)} | "
            f"{_number(r.latency_ms.p95, 1)} | {r.tokens.prompt}/{r.tokens.completion} | "
            f"{_number(r.cost, 6)} | {_number(r.pass_k)} |")
    lines += ["", f"![accuracy against cost and p95 latency]({chart_name})", "",
              f"Recommended without objectives: {front.recommended or 'none'} ({front.why}).",
              "", "## Failing cases", ""]
    for outcome in failing:
        links = ", ".join(f"[turn {t.turn_id}]({VIEWER}{t.trace_id})" if t.trace_id
                          else f"turn {t.turn_id}" for t in outcome.turns)
        why = "; ".join(r.detail for r in outcome.reasons) or "—"
        lines.append(f"- `{outcome.config}` `{outcome.case_id}` #{outcome.repeat}: {why} "
                     f"({links})")
    if not failing:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def chart(report: RunReport, path: Path) -> None:
    """Accuracy against cost per case and against p95 latency, the frontier joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = {r.config for r in pareto(report.results)}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, label, x_of in ((axes[0], "cost per case", _cost),
                              (axes[1], "p95 latency (ms)", _p95)):
        for result in report.results:
            x = x_of(result)
            on = result.config in front
            axis.scatter([x], [result.accuracy or 0.0], marker="o" if on else "x",
                         color="tab:blue" if on else "tab:gray")
            axis.annotate(result.config, (x, result.accuracy or 0.0), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
        line = sorted((x_of(r), r.accuracy or 0.0) for r in report.results if r.config in front)
        if len(line) > 1:
            axis.plot(*zip(*line, strict=True), color="tab:blue", alpha=0.5)
        axis.set_xlabel(label)
        axis.set_ylabel("accuracy")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    figure.suptitle(f"Eval run {report.id}: frontier in blue")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _cost(result: ConfigResult) -> float:
    return result.cost or 0.0


def _p95(result: ConfigResult) -> float:
    return result.latency_ms.p95 or 0.0


def compared(before: Sequence[CaseOutcome], after: Sequence[CaseOutcome]) -> str:
    """Cases (by configuration, case and repeat) that passed in one run and not the other."""
    old = {(o.config, o.case_id, o.repeat): o for o in before}
    new = {(o.config, o.case_id, o.repeat): o for o in after}
    shared = sorted(old.keys() & new.keys())
    regressed = [k for k in shared if old[k].passed and not new[k].passed]
    improved = [k for k in shared if not old[k].passed and new[k].passed]
    lines = [f"{len(shared)} cases in both runs: {len(regressed)} regressed, "
             f"{len(improved)} improved"]
    for title, keys in (("regressed", regressed), ("improved", improved)):
        lines.append(f"{title}:")
        for key in keys:
            turn = next((t for t in new[key].turns if t.trace_id), None)
            link = f"  {VIEWER}{turn.trace_id}" if turn else ""
            why = "; ".join(r.detail for r in new[key].reasons)
            lines.append(f"  {key[0]} {key[1]} #{key[2]}{': ' + why if why else ''}{link}")
    return "\n".join(lines)
