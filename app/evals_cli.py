"""`switchboard evals`: import BFCL files as an eval set, write a run's report and chart, and
compare two runs case by case. Each works on the configured database directly."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from app.settings import Settings

if TYPE_CHECKING:
    from planner.evals.cases import EvalCase
    from planner.evals.outcomes import CaseOutcome
    from planner.evals.service import RunReport
    from planner.evals.store import EvalStore

T = TypeVar("T")


def add_commands(commands: Any) -> None:
    evals = commands.add_parser("evals", help="eval sets and runs").add_subparsers(
        required=True, metavar="ACTION")
    bfcl = evals.add_parser(
        "import-bfcl", help="make an eval set of BFCL questions and possible answers, "
        "registering the functions the tenant lacks")
    bfcl.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                      help="QUESTION.json POSSIBLE_ANSWER.json, or a folder holding BFCL's "
                           "question/ and possible_answer/")
    bfcl.add_argument("--set", required=True, dest="set_name", help="the new set's name")
    bfcl.add_argument("--limit", type=int, default=None, help="at most this many cases per file")
    bfcl.add_argument("--tenant", default="default")
    bfcl.set_defaults(run=_import_bfcl)
    report = evals.add_parser("report", help="a run's Markdown report and PNG chart")
    report.add_argument("run_id", metavar="RUN")
    report.add_argument("--out", type=Path, default=Path("."), help="folder to write into")
    report.add_argument("--tenant", default="default")
    report.set_defaults(run=_report)
    compare = evals.add_parser("compare", help="cases that regressed and improved from A to B")
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.add_argument("--tenant", default="default")
    compare.set_defaults(run=_compare)


def _bfcl_pairs(paths: list[Path]) -> list[tuple[Path, Path]]:
    from planner.evals.bfcl import paired_files

    if len(paths) == 1 and paths[0].is_dir():
        pairs = paired_files(paths[0])
        if not pairs:
            raise SystemExit(f"switchboard: {paths[0]} holds no question/X.json with a "
                             "possible_answer/X.json")
        return pairs
    if len(paths) != 2:
        raise SystemExit("switchboard: give QUESTION.json POSSIBLE_ANSWER.json, or one folder")
    return [(paths[0], paths[1])]


def _import_bfcl(settings: Settings, args: argparse.Namespace) -> int:
    from planner.evals.bfcl import bfcl_cases, category_of, read_lines
    from tools.errors import ImportFormatError, SpecInvalid

    specs: dict[str, dict[str, Any]] = {}
    cases: list[EvalCase] = []
    try:
        for question_file, answer_file in _bfcl_pairs(args.paths):
            questions = read_lines(question_file)[: args.limit]
            _found, made = bfcl_cases(questions, read_lines(answer_file),
                                      tag=category_of(question_file), taken=specs)
            cases += made
        summary = asyncio.run(_write_set(settings, args.tenant, args.set_name,
                                         list(specs.values()), cases))
    except SpecInvalid as exc:
        print(f"switchboard: nothing imported: {exc}", file=sys.stderr)
        return 1
    except ImportFormatError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


async def _write_set(settings: Settings, tenant: str, name: str, specs: list[dict[str, Any]],
                     cases: list[EvalCase]) -> str:
    from app.cli import _with_registry
    from planner.evals.cases import EvalSetIn, case_errors
    from planner.evals.errors import EvalInvalid
    from planner.evals.store import EvalStore
    from tools.registry import Progress, ToolRegistry
    from tools.spec import DEFAULT_NAMESPACE
    from tools.validation import parse_specs

    body = EvalSetIn(name=name, cases=cases)
    errors = case_errors(cases)
    if errors:
        raise EvalInvalid("eval set", errors)

    async def write(registry: ToolRegistry, progress: Progress) -> str:
        # The names the tenant already has, in one query (BFCL specs name no namespace).
        asked = [(DEFAULT_NAMESPACE, s["name"]) for s in specs]
        have = {name for _namespace, name in await registry.executables(tenant, asked)}
        missing = parse_specs([s for s in specs if s["name"] not in have])
        written = await registry.write(tenant, missing, progress=progress)
        made = await EvalStore(registry.pool).create_set(tenant, body)
        return (f"eval set {made.name!r} ({made.id}): {made.cases} cases; tools: "
                f"{written.created} registered, {len(specs) - len(missing)} already there")

    return await _with_registry(settings, write)


async def _with_store(settings: Settings, work: Callable[[EvalStore], Awaitable[T]]) -> T:
    from app.database import database
    from planner.evals.store import EvalStore

    async with database(settings.database_url, settings.data_dir) as (_dsn, pool):
        return await work(EvalStore(pool))


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from planner.evals.errors import EvalRunNotFound
    from planner.evals.report import chart, markdown
    from planner.evals.service import run_report

    async def read(store: EvalStore) -> tuple[RunReport, list[CaseOutcome]]:
        return (await run_report(store, args.tenant, args.run_id),
                await store.outcomes(args.tenant, args.run_id, passed=False))

    try:
        report, failing = asyncio.run(_with_store(settings, read))
    except EvalRunNotFound as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{report.id}.png"
    chart(report, png)
    md = args.out / f"{report.id}.md"
    md.write_text(markdown(report, failing, png.name), encoding="utf-8")
    print(f"{md}\n{png}")
    return 0


def _compare(settings: Settings, args: argparse.Namespace) -> int:
    from planner.evals.errors import EvalRunNotFound
    from planner.evals.report import compared

    async def read(store: EvalStore) -> tuple[list[CaseOutcome], list[CaseOutcome]]:
        await store.get_run(args.tenant, args.run_a)
        await store.get_run(args.tenant, args.run_b)
        return (await store.outcomes(args.tenant, args.run_a),
                await store.outcomes(args.tenant, args.run_b))

    try:
        before, after = asyncio.run(_with_store(settings, read))
    except EvalRunNotFound as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    print(compared(before, after))
    return 0
