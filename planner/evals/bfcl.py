"""BFCL's question and possible-answer files as eval cases and the tool specs they need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from planner.evals.cases import CaseTurn, EvalCase, ExpectedCall
from tools.errors import ImportFormatError
from tools.importing import from_bfcl
from tools.spec import function_name


def read_lines(path: Path) -> list[dict[str, Any]]:
    """A BFCL file: one JSON object per line."""
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportFormatError(str(path), None, f"cannot read file: {exc.strerror}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(str(path), number, f"not valid JSON: {exc.msg}") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ImportFormatError(str(path), number, 'expected an object with an "id"')
        entries.append(entry)
    return entries


def bfcl_cases(
    questions: list[dict[str, Any]], answers: list[dict[str, Any]], *, tag: str | None = None,
    taken: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[EvalCase]]:
    """The tool specs the questions offer and one case per question that has an answer. BFCL
    gives different functions the same name in different questions; each with parameters of
    its own gets a tool of its own (`name_2`, `name_3`, ...), and its cases expect that name.
    `taken` holds the specs of earlier files by name, so names stay apart across files."""
    specs = taken if taken is not None else {}
    made: list[dict[str, Any]] = []
    truth = {a["id"]: a.get("ground_truth", []) for a in answers}
    cases = []
    for question in questions:
        names: dict[str, str] = {}
        for function in question.get("function", []):
            spec = from_bfcl(function)
            name = _own_name(spec, specs)
            names[spec["name"]] = name
            if name not in specs:
                specs[name] = {**spec, "name": name}
                made.append(specs[name])
        if question["id"] not in truth:
            continue
        turn = CaseTurn(user=_user_text(question), order="any",
                        expected_calls=[_expected(call, names) for call in truth[question["id"]]])
        cases.append(EvalCase(id=question["id"], turns=[turn], tags=[tag] if tag else []))
    return made, cases


def _own_name(spec: dict[str, Any], specs: dict[str, dict[str, Any]]) -> str:
    """The spec's name, or the first `name_N` not held by a function of other parameters (one
    that differs only in its description is taken as the same tool)."""
    name, n = spec["name"], 1
    while name in specs and specs[name].get("parameters") != spec.get("parameters"):
        n += 1
        name = f"{spec['name'][:60]}_{n}"
    return name


def _user_text(question: dict[str, Any]) -> str:
    """The first turn's user messages, in order."""
    turns = question.get("question") or [[]]
    first = turns[0] if isinstance(turns[0], list) else turns
    return "\n".join(str(m.get("content", "")) for m in first
                     if isinstance(m, dict) and m.get("role") == "user")


def _expected(call: dict[str, Any], names: dict[str, str]) -> ExpectedCall:
    [(name, arguments)] = call.items()
    return ExpectedCall(name=names.get(function_name(name), function_name(name)),
                        arguments={k: v if isinstance(v, list) else [v]
                                   for k, v in arguments.items()})


def category_of(path: Path) -> str:
    """`BFCL_v4_parallel_multiple.json` -> `parallel_multiple`."""
    stem = path.stem
    return stem.split("_", 2)[2] if stem.startswith("BFCL_v") and stem.count("_") >= 2 else stem


def paired_files(folder: Path) -> list[tuple[Path, Path]]:
    """BFCL's layout: each `question/X.json` with its `possible_answer/X.json`."""
    questions = folder / "question"
    answers = folder / "possible_answer"
    return [(q, answers / q.name) for q in sorted(questions.glob("*.json"))
            if (answers / q.name).is_file()]
