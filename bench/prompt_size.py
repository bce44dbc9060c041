"""Prompt size and prefix-cache friendliness of real turns, with 500 registered tools.

    .venv/bin/python -m bench.prompt_size [--data ../shared/data] [--quick] [--tools N]

The service runs as in production (create_app under uvicorn on 127.0.0.1, an embedded Postgres,
the real embedder); real tools from BFCL, MetaTool and APIBench are registered over REST, and
conversations of two turns each are held over HTTP with real user requests from BFCL and
MetaTool. The one stand-in is the model: a scripted SGLang-compatible server that records every
request the engine sends. Each turn makes three model calls: the model calls the first two
tools it is offered at once, then calls `search_tools` (so the candidate set grows mid-turn),
then answers.

Every recorded request is rendered as Qwen3's chat template lays it out for the model (tools
inside the system message, tool results as user turns) and counted two ways:

- prompt size: bytes, and WordPiece tokens from all-MiniLM-L6-v2's tokenizer (the one shipped
  by a package here; Qwen's own tokenizer is not available offline), for the request as sent
  (the turn's top-k candidates) and for the same request with every registered tool instead;
- prefix share: the length of the longest common prefix of two consecutive requests of one
  turn, over the length of the earlier one. SGLang's radix cache reuses exactly that prefix.

A full run rewrites the generated block of the "Prompt size" section of bench/BENCHMARKS.md;
`--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.main import create_app
from app.settings import Settings
from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.search_latency import load_corpus
from planner.prompt import SEARCH_TOOLS, SEARCH_TOOLS_ENTRY, tool_entry
from tests.loopback import serving
from tests.scripted_model import ScriptedModel, ScriptedReply, Step
from tools.embed import SentenceTransformerEmbedder, resolve_model
from tools.spec import ToolSpec

BEGIN, END = "<!-- prompt-size:begin -->", "<!-- prompt-size:end -->"
SECTION = "## Prompt size"
TARGET_PREFIX = 0.90
FULL_CONVERSATIONS, QUICK_CONVERSATIONS = 25, 5
TURNS_PER_CONVERSATION = 2


ADMIN_KEY = "sbk_bench_prompt_size_admin_key"


class BenchError(RuntimeError):
    """The run could not measure what it set out to."""


@contextlib.asynccontextmanager
async def service(
    database_url: str, model_url: str, data_dir: str, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[httpx.AsyncClient]:
    """The service in this process (the scripted model keeps every request it is sent), on a
    loopback port, and a client authenticated to it."""
    settings = Settings(database_url=database_url, model_url=model_url, data_dir_path=data_dir,
                        register_builtins=False, admin_key=ADMIN_KEY,
                        egress_allowlist="127.0.0.0/8")
    app = create_app(settings, embedder=embedder)
    # Litestar's default logging sends every outgoing request's INFO line to stderr.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    async with serving(app, lifespan="on") as server:
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=auth) as client:
            yield client


def respond(body: dict[str, Any]) -> Step:
    """Two offered tools at once, then search_tools, then an answer."""
    messages = body["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    replies = sum(m["role"] == "assistant" for m in messages[last_user:])
    offered = [t["function"]["name"] for t in body.get("tools", [])]
    callable_ = [n for n in offered if n != SEARCH_TOOLS]
    if replies == 0 and callable_:
        return ScriptedReply(
            reasoning="Two tools look relevant; they do not depend on each other.",
            tool_calls=[(name, {}) for name in callable_[:2]],
        )
    if replies == 1:
        request = str(messages[last_user].get("content") or "")[:200]
        return ScriptedReply(tool_calls=[(SEARCH_TOOLS, {"query": f"more tools for: {request}"})])
    return ScriptedReply(content="Here is what I found, from the tools' results above.")


# -- rendering and counting ---------------------------------------------------------------


def render(body: dict[str, Any]) -> str:
    """The request as Qwen3's chat template lays it out: tools in the system message, one
    JSON object per line; assistant tool calls as <tool_call> blocks; tool results as user
    turns in <tool_response> blocks."""
    out: list[str] = []
    messages = body["messages"]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    tools = body.get("tools") or []
    out.append(f"<|im_start|>system\n{system}")
    if tools:
        out.append("\n\n# Tools\n\nYou may call one or more functions to assist with the user "
                   "query.\n\nYou are provided with function signatures within <tools></tools> "
                   "XML tags:\n<tools>")
        out.extend("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        out.append("\n</tools>")
    out.append("<|im_end|>\n")
    for message in messages[1:] if system else messages:
        role, content = message["role"], message.get("content") or ""
        if role == "tool":
            out.append(f"<|im_start|>user\n<tool_response>\n{content}\n</tool_response>"
                       "<|im_end|>\n")
            continue
        out.append(f"<|im_start|>{role}\n{content}")
        for call in message.get("tool_calls") or []:
            function = call["function"]
            out.append(f'\n<tool_call>\n{{"name": "{function["name"]}", "arguments": '
                       f'{function["arguments"]}}}\n</tool_call>')
        out.append("<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


class Counter:
    def __init__(self) -> None:
        from tokenizers import Tokenizer

        location = Path(resolve_model("all-MiniLM-L6-v2")) / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(location))
        self.tokenizer.no_truncation()

    def tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slices: C speed)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


# -- the run ------------------------------------------------------------------------------


class Call(msgspec.Struct, frozen=True):
    conversation: int
    turn: int
    index: int
    """Which model call of its turn."""
    tools_offered: int
    bytes_sent: int
    tokens_sent: int
    bytes_all: int
    tokens_all: int
    prefix: float | None
    """Share of the previous call of the same turn that this one starts with."""
    grew: bool
    """The turn's candidate set grew since its previous call (search_tools found tools)."""
    prefix_from_last_turn: float | None
    """For a turn's first call: share of the previous turn's last call it starts with."""


class Results(msgspec.Struct, frozen=True):
    calls: list[Call]
    tools: int
    seconds: float


def every_tool(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    entries = sorted((tool_entry(s.name, s.description, s.parameters) for s in specs),
                     key=lambda e: e.function.name)
    return msgspec.to_builtins([SEARCH_TOOLS_ENTRY, *entries])  # as the request body has them


def measure_calls(
    requests: list[dict[str, Any]], marks: list[tuple[int, int, int]], all_tools: list[Any]
) -> list[Call]:
    """`marks`: (conversation, turn, index of its first request) for each turn, in order."""
    counter = Counter()
    calls: list[Call] = []
    bounds = [*[m[2] for m in marks], len(requests)]
    previous_turn_last: str | None = None
    for (conversation, turn, first), end in zip(marks, bounds[1:], strict=True):
        if turn == 0:
            previous_turn_last = None
        previous: str | None = None
        offered_before = 0
        for index, body in enumerate(requests[first:end]):
            text = render(body)
            everything = render({**body, "tools": all_tools})
            calls.append(Call(
                conversation=conversation,
                turn=turn,
                index=index,
                tools_offered=len(body.get("tools") or []),
                bytes_sent=len(text.encode()),
                tokens_sent=counter.tokens(text),
                bytes_all=len(everything.encode()),
                tokens_all=counter.tokens(everything),
                prefix=None if previous is None else common_prefix(previous, text) / len(previous),
                grew=previous is not None and len(body.get("tools") or []) > offered_before,
                prefix_from_last_turn=(
                    common_prefix(previous_turn_last, text) / len(previous_turn_last)
                    if index == 0 and previous_turn_last is not None else None
                ),
            ))
            previous = text
            offered_before = len(body.get("tools") or [])
        previous_turn_last = previous
    return calls


async def run(data: Path, tools: int, conversations: int) -> Results:
    started = time.monotonic()
    corpus = load_corpus(data, tools, conversations * TURNS_PER_CONVERSATION)
    specs = corpus.tools[:tools]
    queries = corpus.queries[-conversations * TURNS_PER_CONVERSATION:]
    marks: list[tuple[int, int, int]] = []
    async with registered(specs, respond, "bench_prompt_size") as (client, model):
        requests = model.requests
        for c in range(conversations):
            conversation = await _post(client, "/v1/conversations", {}, 201)
            for t in range(TURNS_PER_CONVERSATION):
                marks.append((c, t, len(requests)))
                query = queries[c * TURNS_PER_CONVERSATION + t]
                body = {"message": query, "mode": "auto", "stream": False}
                turn = await _post(
                    client, f"/v1/conversations/{conversation['id']}/turns", body, 200
                )
                if turn["status"] != "completed":
                    raise BenchError(f"a turn did not complete: {turn}")
    calls = measure_calls(requests, marks, every_tool(specs))
    return Results(calls=calls, tools=len(specs), seconds=time.monotonic() - started)


@contextlib.asynccontextmanager
async def registered(
    specs: Sequence[ToolSpec], respond: Callable[[dict[str, Any]], Step], database: str
) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedModel]]:
    """The service on a fresh database with `specs` registered, and the scripted model that
    answers it by `respond`, keeping every request."""
    embedder = SentenceTransformerEmbedder()
    model = ScriptedModel(responder=respond)
    try:
        await model.start()
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as data_dir:
            url = await fresh_database(postgres, database)
            async with service(url, model.url, data_dir, embedder) as client:
                await _register(client, specs)
                yield client, model
    finally:
        await model.stop()
        embedder.close()


async def _register(client: httpx.AsyncClient, specs: Sequence[ToolSpec]) -> None:
    body = {"tools": [msgspec.to_builtins(s) for s in specs]}
    response = await client.post("/v1/tools/bulk", json=body, timeout=600)
    if response.status_code != 200:
        raise BenchError(f"registering tools: HTTP {response.status_code}: {response.text[:300]}")


async def _post(client: httpx.AsyncClient, path: str, body: Any, status: int) -> Any:
    response = await client.post(path, json=body, timeout=60)
    if response.status_code != status:
        raise BenchError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


# -- report -------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), statistics.fmean(values)


def report(results: Results, command: str) -> str:
    calls = results.calls
    sent = [c.tokens_sent for c in calls]
    everything = [c.tokens_all for c in calls]
    ratios = [c.tokens_sent / c.tokens_all for c in calls]
    byte_ratios = [c.bytes_sent / c.bytes_all for c in calls]
    across = [c.prefix_from_last_turn for c in calls if c.prefix_from_last_turn is not None]
    offered = [c.tools_offered for c in calls]
    rows = ["| model call of the turn | calls | tools offered p50 | tokens sent p50 | tokens with "
            "every tool p50 | sent / every tool p50 | prefix of the previous call: p50 / min |",
            "|---|---|---|---|---|---|---|"]
    for index in sorted({c.index for c in calls}):
        group = [c for c in calls if c.index == index]
        prefixes = [c.prefix for c in group if c.prefix is not None]
        shown = (f"{statistics.median(prefixes):.3f} / {min(prefixes):.3f}" if prefixes
                 else "(first call)")
        tools_p50 = statistics.median(c.tools_offered for c in group)
        rows.append(
            f"| {index + 1} | {len(group)} | {tools_p50:.0f}"
            f" | {statistics.median(c.tokens_sent for c in group):,.0f}"
            f" | {statistics.median(c.tokens_all for c in group):,.0f}"
            f" | {statistics.median(c.tokens_sent / c.tokens_all for c in group):.3f} | {shown} |"
        )
    steady = [c.prefix for c in calls if c.prefix is not None and not c.grew]
    grown = [c.prefix for c in calls if c.prefix is not None and c.grew]
    verdict = "meets" if steady and min(steady) >= TARGET_PREFIX else "misses"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return "\n".join([
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}; {results.seconds:.0f} s. "
        f"{results.tools} tools registered; {len(calls)} model calls in "
        f"{len({(c.conversation, c.turn) for c in calls})} turns of "
        f"{len({c.conversation for c in calls})} conversations; tokens are all-MiniLM-L6-v2 "
        "WordPiece tokens of the request rendered as Qwen3's chat template lays it out.",
        "",
        *rows,
        "",
        f"- Prompt size: a call sends {statistics.median(sent):,.0f} tokens at the median "
        f"(max {max(sent):,}) with the turn's candidates ({min(offered)}-{max(offered)} tool "
        f"entries), against {statistics.median(everything):,.0f} (max {max(everything):,}) with "
        f"all {results.tools} tools: {statistics.median(ratios):.3f} of it at the median, "
        f"1/{1 / statistics.median(ratios):.0f} (bytes: {statistics.median(byte_ratios):.3f}).",
        _prefix_line("Prefix share within a turn, candidates unchanged", steady)
        + f"; {verdict} the >= {TARGET_PREFIX:.0%} target (every pair).",
        _prefix_line("Prefix share within a turn, after search_tools added candidates", grown)
        + " (the tool block sits in the system message, so a new tool changes the prompt "
        "where the block ends).",
        f"- Across turns (a turn's first call against the previous turn's last): median "
        f"{statistics.median(across):.4f}, min {min(across):.4f} over {len(across)} pairs "
        "(no target here: these conversations' second requests are unrelated to their first, "
        "so each turn starts a fresh tool block; `bench.prompt_turns` measures follow-ups)."
        if across else
        "- Across turns: no second turns measured.",
        END,
    ])


def _prefix_line(what: str, shares: Sequence[float]) -> str:
    if not shares:
        return f"- {what}: no such pairs"
    median, low, mean = _stats(shares)
    return (f"- {what}: median {median:.4f}, min {low:.4f}, mean {mean:.4f} over "
            f"{len(shares)} consecutive pairs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.prompt_size",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CONVERSATIONS} conversations; BENCHMARKS.md untouched")
    parser.add_argument("--tools", type=int, default=500, help="tools to register (500)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    conversations = QUICK_CONVERSATIONS if args.quick else FULL_CONVERSATIONS
    try:
        results = asyncio.run(run(args.data, args.tools, conversations))
    except BenchError as exc:
        print(f"bench.prompt_size: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["python -m bench.prompt_size", *(argv or sys.argv[1:])])
    markdown = report(results, command)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
