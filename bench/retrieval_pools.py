"""The public tool-retrieval sets (BFCL, MetaTool, APIBench) read as tool pools with queries."""

from __future__ import annotations

import csv
import json
import random
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from tools.importing import deduplicate, read_tool_file
from tools.spec import ToolSpec, function_name
from tools.validation import parse_specs

BFCL_SETS = ("simple_python", "multiple", "parallel", "parallel_multiple")
APIBENCH_HUBS = (
    ("HuggingFace", "huggingface_api.jsonl", "huggingface_eval.json"),
    ("TFHub", "tensorflowhub_api.jsonl", "tensorflow_eval.json"),
    ("TorchHub", "torchhub_api.jsonl", "torchhub_eval.json"),
)
SEED = 20250101
METATOOL_QUERIES = 2000
METATOOL_EXAMPLES = 5


class Query(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    """Stable identity; it alone decides the dev / held-out split."""
    text: str
    relevant: frozenset[str]
    """Names of the tools that answer the query."""

    @property
    def held_out(self) -> bool:
        # A hash of the key, not a shuffle: subsampling cannot move a query between splits.
        return zlib.crc32(self.key.encode()) % 2 == 1


class Pool(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    tools: list[ToolSpec]
    queries: list[Query]
    note: str = ""
    """How the pool was formed, where it differs from the obvious reading of the source."""

    def subsample(self, count: int, seed: int = SEED) -> Pool:
        if count >= len(self.queries):
            return self
        queries = random.Random(seed).sample(self.queries, count)
        return msgspec.structs.replace(self, queries=queries)


def _json_lines(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


# -- BFCL ------------------------------------------------------------------------------------


def bfcl_pool(data: Path) -> Pool:
    """The four non-live Python sets pooled; tools imported as `switchboard tools import
    --on-duplicate first` would (BFCL names converted, first spec of a repeated name kept)."""
    items: list[Any] = []
    entries: list[dict[str, Any]] = []
    answers: dict[str, list[dict[str, Any]]] = {}
    for name in BFCL_SETS:
        question_file = data / "bfcl" / "question" / f"BFCL_v4_{name}.json"
        answer_file = data / "bfcl" / "possible_answer" / f"BFCL_v4_{name}.json"
        items.extend(read_tool_file(question_file))
        entries.extend(_json_lines(question_file))
        answers.update((a["id"], a["ground_truth"]) for a in _json_lines(answer_file))
    specs = parse_specs(deduplicate(items, on_duplicate="first"))
    queries = [
        Query(key=e["id"], text=_user_text(e), relevant=_called(answers[e["id"]])) for e in entries
    ]
    return Pool(name="BFCL", tools=specs, queries=queries, note=_bfcl_note(entries, len(specs)))


def _bfcl_note(entries: list[dict[str, Any]], tools: int) -> str:
    variants: dict[str, set[str]] = defaultdict(set)
    for function in (f for entry in entries for f in entry["function"]):
        variants[function["name"]].add(json.dumps(function, sort_keys=True))
    varied = sum(1 for specs in variants.values() if len(specs) > 1)
    return (
        f"{len(variants)} distinct function names; {len(variants) - tools} of them become "
        f"another's name once '.' is '_' (flight.book, flight_book), leaving {tools} tools; "
        f"{varied} names come with more than one spec, the first is kept"
    )


def _user_text(entry: dict[str, Any]) -> str:
    turns = entry["question"]
    return "\n".join(m["content"] for turn in turns for m in turn if m["role"] == "user")


def _called(ground_truth: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(function_name(name) for call in ground_truth for name in call)


# -- MetaTool --------------------------------------------------------------------------------


def metatool_pools(data: Path) -> tuple[Pool, Pool]:
    """Descriptions only, and the same with example requests drawn from unscored rows."""
    folder = data / "metatool"
    descriptions: dict[str, str] = json.loads((folder / "plugin_des.json").read_text("utf-8"))
    with (folder / "all_clean_data.csv").open(encoding="utf-8", newline="") as rows:
        pairs = [(row["Query"].strip(), function_name(row["Tool"])) for row in csv.DictReader(rows)]
    tools_of: dict[str, set[str]] = defaultdict(set)
    for text, tool in pairs:
        tools_of[text].add(tool)
    rng = random.Random(SEED)
    scored = sorted(rng.sample(sorted(tools_of), METATOOL_QUERIES))
    queries = [Query(key=t, text=t, relevant=frozenset(tools_of[t])) for t in scored]
    examples = _examples(pairs, {t.casefold() for t in scored}, rng)
    plain = [ToolSpec(name=function_name(n), description=d) for n, d in descriptions.items()]
    taught = [msgspec.structs.replace(s, examples=examples[s.name]) for s in plain]
    note = (
        f"{METATOOL_QUERIES} distinct queries sampled (seed {SEED}); examples come from the "
        "other rows, none equal to a scored query"
    )
    return (
        Pool(name="MetaTool", tools=plain, queries=queries, note=note),
        Pool(name=f"MetaTool +{METATOOL_EXAMPLES} ex.", tools=taught, queries=queries, note=note),
    )


def _examples(
    pairs: list[tuple[str, str]], scored: set[str], rng: random.Random
) -> dict[str, list[str]]:
    candidates: dict[str, list[str]] = defaultdict(list)
    for text, tool in pairs:
        if text.casefold() not in scored and text not in candidates[tool]:
            candidates[tool].append(text)
    return {tool: rng.sample(texts, METATOOL_EXAMPLES) for tool, texts in candidates.items()}


# -- APIBench --------------------------------------------------------------------------------


def apibench_pools(data: Path) -> list[Pool]:
    return [_apibench_pool(data / "apibench", *hub) for hub in APIBENCH_HUBS]


def _apibench_pool(folder: Path, hub: str, api_file: str, eval_file: str) -> Pool:
    """One tool per distinct API record; a query's answer is the record equal to its `api_data`."""
    names: dict[str, str] = {}
    tools: list[ToolSpec] = []
    for record in _json_lines(folder / "api" / api_file):
        identity = _identity(record)
        if identity not in names:
            names[identity] = _unique_name(record["api_name"], len(tools), names)
            tools.append(_api_spec(names[identity], record))
    queries: list[Query] = []
    missing = 0
    for number, entry in enumerate(_json_lines(folder / "eval" / eval_file)):
        answer = names.get(_identity(entry["api_data"]))
        if answer is None:
            missing += 1
            continue
        text = _instruction(entry["code"])
        queries.append(Query(key=f"{hub}-{number}", text=text, relevant=frozenset([answer])))
    note = f"{len(tools)} distinct records"
    if missing:
        note += f"; {missing} queries left out: their API record is not in the pool"
    return Pool(name=f"APIBench {hub}", tools=tools, queries=queries, note=note)


def _identity(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _unique_name(api_name: str, number: int, names: dict[str, str]) -> str:
    """Several records share an api_name (TFHub has 55 names for 694 records)."""
    name = function_name(api_name)
    if name in names.values():
        suffix = f"_{number}"
        name = name[: 64 - len(suffix)] + suffix
    return name


def _api_spec(name: str, record: dict[str, Any]) -> ToolSpec:
    """An API record as an agent developer would register it: what it does, and its call."""
    description = (
        f"{record['functionality']}: {record['description']}\n"
        f"Domain: {record['domain']}. Call: {record['api_call']}"
    )
    return ToolSpec(name=name, description=description.strip())


def _instruction(code: str) -> str:
    return code.split("###Instruction:", 1)[-1].split("###Output:", 1)[0].strip()
