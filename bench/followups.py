"""Retrieval for follow-up questions: a multi-turn set built from MetaTool, where the last
message names no tool ("And in metres?"), and recall of the tools it needs among the
candidates a turn offers.

    .venv/bin/python -m bench.followups [--data ../shared/data] [--quick]

The tools are MetaTool's 199 descriptions (as `bench.retrieval`'s "MetaTool" pool). Each
conversation is the user's earlier messages, the tools the last turn called with success, a
follow-up and the tools it needs. Four kinds, made from MetaTool rows:

    same      the last turn called T for a MetaTool request; the follow-up asks for more of
              the same in words of its own ("And for next week?"); it needs T
    again     as `same`, one more generic follow-up later (the request is two messages back)
    answered  the last turn called nothing (the model asked a question back); the follow-up
              answers it ("Yes, go ahead."); it needs T
    rest      a request for two tools (MetaTool's multi-tool set); the last turn called the
              first; the follow-up asks for the rest ("And the other thing?"); it needs those
    switch    a control: the follow-up is a whole new request for another tool; it needs that

A conversation's split is its MetaTool request's (a hash of the request, as in
`bench.retrieval`), and the follow-up wordings of the two halves are different lists, so
nothing scored was seen while tuning. The weight of earlier messages
(`RankingWeights.context`) is chosen on the dev half; the held-out half is reported. Candidates
are what a turn offers: the top CANDIDATE_K (8) of retrieval, plus the last turn's tools.

A full run rewrites the generated part of the "Follow-up retrieval" section of
bench/BENCHMARKS.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
import zlib
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import msgspec
import numpy as np

from bench._markdown import publish
from bench.retrieval import EmbeddingCache, build_index
from bench.retrieval_pools import SEED, metatool_pools
from planner.tool_block import ADD_MATCH, STRONG_MATCH, Found, Key, compose
from tools.embed import BUNDLED_MODEL, SentenceTransformerEmbedder, Vectors
from tools.framing import framed, framing_shift, shift_texts
from tools.index import QueryPart, RankingWeights, SearchHit, ToolIndex
from tools.sentences import search_texts
from tools.spec import function_name

SECTION = "## Follow-up retrieval"
BEGIN, END = "<!-- followups:begin -->", "<!-- followups:end -->"
K = 8
"""Candidates retrieval offers a turn (CANDIDATE_K's default)."""
CONTEXT_REQUESTS = 2
"""Earlier user messages searched with (planner/engine.py's CONTEXT_REQUESTS)."""
PER_KIND, QUICK_PER_KIND = 400, 80
GRID = [(0.0, 0.0)] + [(w, share) for w in (0.75, 1.5, 3.0) for share in (0.25, 0.5, 0.625)]
"""(context weight, context share) tried on the dev half; (0, 0) is retrieval without it."""
SWITCH_LOSS = 0.05
"""The most recall a new-topic request (`switch`) may lose on the dev half for the choice."""
FOLLOW_UPS = ("same", "again", "answered", "rest")
KINDS = ("same", "again", "answered", "rest", "switch")

# Follow-up wordings: the dev half's and the held-out half's are different lists.
SAME = {
    "dev": ["And for tomorrow?", "Can you do the same again, but for next week?",
            "What about the second option?", "Do that once more with a bigger number.",
            "Same thing for my colleague, please.", "Great, and in metric units?",
            "And what if I wanted more than that?", "Could you also check it for my sister?"],
    "held-out": ["And in metres?", "Now do it again for last month.", "What about the other one?",
                 "Same question, but for London.", "Could you check that again tomorrow morning?",
                 "OK, and for two people?", "How about a cheaper one?",
                 "And if I asked you again next year?"],
}
ANSWERS = {
    "dev": ["Yes, please go ahead.", "Sure, next Friday works.", "The second one.",
            "For two people, please.", "Yes, in euros.", "Whatever you think is best."],
    "held-out": ["Yes, do it.", "Tomorrow at noon.", "The first one, please.",
                 "Go ahead with the cheaper option.", "Yes please, for my whole family.",
                 "That sounds right, continue."],
}
REST = {
    "dev": ["And the other thing I asked about?", "You missed the second part of my question.",
            "What about the rest of it?"],
    "held-out": ["Now the other part, please.", "And the second thing?",
                 "You only answered half; do the rest."],
}


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    held_out: bool
    earlier: list[str]
    """The user's earlier messages, in order."""
    called: list[str]
    """The tools the last turn called with success."""
    follow_up: str
    relevant: frozenset[str]


def _held_out(text: str) -> bool:
    return zlib.crc32(text.encode()) % 2 == 1  # as bench.retrieval_pools.Query.held_out


def _split(held_out: bool) -> str:
    return "held-out" if held_out else "dev"


def conversations(data: Path, per_kind: int) -> list[Conversation]:
    pool, _ = metatool_pools(data)
    rng = random.Random(SEED)
    singles = [q for q in pool.queries if len(q.relevant) == 1]
    made: list[Conversation] = []
    for kind in ("same", "again", "answered"):
        for q in rng.sample(singles, min(per_kind, len(singles))):
            [tool] = q.relevant
            split = _split(q.held_out)
            first, second = rng.sample(SAME[split], 2)
            earlier, follow_up, called = [q.text], first, [tool]
            if kind == "again":
                earlier, follow_up = [q.text, first], second
            elif kind == "answered":
                follow_up, called = rng.choice(ANSWERS[split]), []
            made.append(Conversation(kind=kind, held_out=q.held_out, earlier=earlier,
                                     called=called, follow_up=follow_up, relevant=q.relevant))
    made += _rest(data, rng, per_kind)
    for q in rng.sample(singles, min(per_kind, len(singles))):
        other = rng.choice([o for o in singles
                            if o.held_out == q.held_out and o.relevant != q.relevant])
        made.append(Conversation(kind="switch", held_out=q.held_out, earlier=[q.text],
                                 called=sorted(q.relevant), follow_up=other.text,
                                 relevant=other.relevant))
    return made


def _rest(data: Path, rng: random.Random, per_kind: int) -> list[Conversation]:
    rows = json.loads((data / "metatool" / "multi_tool_query_golden.json").read_text("utf-8"))
    made = []
    for row in rng.sample(rows, min(per_kind, len(rows))):
        tools = [function_name(t) for t in row["tool"]]
        held_out = _held_out(row["query"])
        made.append(Conversation(kind="rest", held_out=held_out, earlier=[row["query"]],
                                 called=tools[:1], follow_up=rng.choice(REST[_split(held_out)]),
                                 relevant=frozenset(tools[1:])))
    return made


class Searcher:
    """ToolIndex.search as ToolRegistry.search calls it: the request and its sentences, and the
    earlier requests as context, each moved by the framing shift."""

    def __init__(self, index: ToolIndex, cache: EmbeddingCache) -> None:
        self.index, self.cache = index, cache
        self.shift = framing_shift(np.stack(cache.embed(shift_texts())))

    def _framed(self, vector: Vectors) -> Vectors:
        weight = self.index.weights.framing
        return framed(vector, self.shift, weight) if weight else vector

    def hits(self, text: str, context: Sequence[str]) -> list[SearchHit]:
        texts = search_texts(text)
        vectors = self.cache.embed(texts)
        parts = [QueryPart(text=t, vector=v) for t, v in zip(texts[1:], vectors[1:], strict=True)]
        earlier = [QueryPart(text=t, vector=self._framed(v))
                   for t, v in zip(context, self.cache.embed(list(context)), strict=True)]
        return self.index.search(self._framed(vectors[0]), text, K, parts=parts, context=earlier)

    def top(self, text: str, context: Sequence[str]) -> list[str]:
        return [h.name for h in self.hits(text, context)]

    def found(self, text: str, context: Sequence[str]) -> list[Found]:
        """Retrieval's picks as the engine hands them to planner/tool_block.py."""
        return [Found((h.namespace, h.name), h.score, by_context=h.by_context, dense=h.dense)
                for h in self.hits(text, context)]


def recall(conversation: Conversation, offered: set[str]) -> float:
    return len(conversation.relevant & offered) / len(conversation.relevant)


class Scores(msgspec.Struct, frozen=True):
    alone: dict[str, float]
    kept: dict[str, float]
    context: dict[str, float]
    request: dict[str, float]
    """Recall of the first request itself, searched alone: what a follow-up could reach."""


def score(searcher: Searcher, talks: list[Conversation]) -> Scores:
    by_kind: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in KINDS}
    for talk in talks:
        context = talk.earlier[-CONTEXT_REQUESTS:][::-1]
        alone = set(searcher.top(talk.follow_up, ()))
        with_context = set(searcher.top(talk.follow_up, context))
        request = set(searcher.top(talk.earlier[0], ()))
        by_kind[talk.kind].append((recall(talk, alone), recall(talk, alone | set(talk.called)),
                                   recall(talk, with_context | set(talk.called)),
                                   recall(talk, request)))
    means = {k: np.mean(v, axis=0) for k, v in by_kind.items() if v}
    return Scores(*({k: float(m[i]) for k, m in means.items()} for i in range(4)))


Choice = tuple[float, float]


def tune(searcher: Searcher, dev: list[Conversation]) -> tuple[Choice, dict[Choice, Scores]]:
    """The (weight, share) with the best mean recall over the follow-up kinds on the dev half,
    among those that cost a new-topic request at most SWITCH_LOSS."""
    tried = {}
    for weight, share in GRID:
        searcher.index.weights = msgspec.structs.replace(
            searcher.index.weights, context=weight, context_share=share)
        tried[(weight, share)] = score(searcher, dev)
    floor = tried[GRID[0]].context["switch"] - SWITCH_LOSS
    allowed = [c for c in GRID if tried[c].context["switch"] >= floor]
    best = max(allowed, key=lambda c: np.mean([tried[c].context[k] for k in FOLLOW_UPS]))
    return best, tried


def report(held: Scores, tried: dict[Choice, Scores], best: Choice, counts: dict[str, int],
           seconds: float) -> str:
    lines = [
        f"<!-- generated by bench/followups.py on {date.today()}; do not edit by hand -->",
        f"Run: `.venv/bin/python -m bench.followups` ({seconds:.0f} s on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {BUNDLED_MODEL}). Recall of the tools a follow-up "
        f"needs among a turn's candidates (the top {K} of retrieval, plus the last turn's tools "
        "where said), on the held-out half:",
        "",
        "| kind | conversations | follow-up alone | + last turn's tools | + earlier requests "
        f"(weight {best[0]:g}, share {best[1]:g}) | the first request, alone |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        lines.append(f"| {kind} | {counts[kind]} | {held.alone[kind]:.3f} | {held.kept[kind]:.3f} "
                     f"| {held.context[kind]:.3f} | {held.request[kind]:.3f} |")
    lines += ["", "The choice, on the dev half: the best mean over the follow-up kinds among "
              f"the settings that cost `switch` (the control) at most {SWITCH_LOSS:g}:", "",
              "| weight | share | " + " | ".join(KINDS) + " | follow-up mean |",
              "|---|---|" + "---|" * (len(KINDS) + 1)]
    for (weight, share), scores in tried.items():
        mark = " (chosen)" if (weight, share) == best else ""
        lines.append(f"| {weight:g}{mark} | {share:g} | "
                     + " | ".join(f"{scores.context[k]:.3f}" for k in KINDS)
                     + f" | {np.mean([scores.context[k] for k in FOLLOW_UPS]):.3f} |")
    return "\n".join(lines)


THRESHOLDS = [(strong, add) for strong in (0.3, 0.35, 0.4, 0.45)
              for add in (0.2, 0.25, 0.3, 0.35) if add <= strong]
"""(strong match, add match) cosines tried for planner/tool_block.py on the dev half."""
Thresholds = tuple[float, float]


class BlockScores(msgspec.Struct, frozen=True):
    recall: dict[str, float]
    kept: dict[str, float]
    """Share of follow-ups whose turn kept the last turn's tool block (perhaps appended to)."""
    intact: dict[str, float]
    """Share of follow-ups whose turn kept the last turn's tool block as it was."""
    size: dict[str, float]
    """Median tools in the block."""


def _keys(names: Sequence[str]) -> list[Key]:
    return [("default", name) for name in names]


def previous_block(searcher: Searcher, talk: Conversation, limits: Thresholds) -> list[Key]:
    """The tool block the turn before the follow-up ended with: the first request's, then one
    for each earlier follow-up; a tool the turn called is in it (the model would have found it
    with `search_tools` if retrieval had not offered it)."""
    called = _keys(talk.called)
    keys: list[Key] = []
    for i, message in enumerate(talk.earlier):
        context = talk.earlier[:i][-CONTEXT_REQUESTS:][::-1]
        keys = compose(keys, searcher.found(message, context), called if i else [], k=K,
                       strong=limits[0], add=limits[1]).keys
        keys += [c for c in called if c not in keys]
    return keys


def block_score(searcher: Searcher, talks: list[Conversation], limits: Thresholds
                ) -> BlockScores:
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in KINDS}
    for talk in talks:
        context = talk.earlier[-CONTEXT_REQUESTS:][::-1]
        previous = previous_block(searcher, talk, limits)
        block = compose(previous, searcher.found(talk.follow_up, context), _keys(talk.called),
                        k=K, strong=limits[0], add=limits[1])
        offered = {name for _, name in block.keys}
        rows[talk.kind].append((recall(talk, offered), float(block.kept),
                                float(block.keys == previous), len(block.keys)))
    mean = {k: np.mean(v, axis=0) for k, v in rows.items() if v}
    return BlockScores(
        recall={k: float(m[0]) for k, m in mean.items()},
        kept={k: float(m[1]) for k, m in mean.items()},
        intact={k: float(m[2]) for k, m in mean.items()},
        size={k: float(np.median([r[3] for r in v])) for k, v in rows.items() if v},
    )


def tune_block(searcher: Searcher, dev: list[Conversation], reference: Scores
               ) -> tuple[Thresholds, dict[Thresholds, BlockScores]]:
    """The thresholds that keep the most blocks intact over the follow-up kinds, among those
    whose recall is no worse than fresh candidates every turn on each follow-up kind, and which
    cost a new-topic request (`switch`) at most SWITCH_LOSS."""
    tried = {limits: block_score(searcher, dev, limits) for limits in THRESHOLDS}
    allowed = [t for t in THRESHOLDS
               if all(tried[t].recall[k] >= reference.context[k] for k in FOLLOW_UPS)
               and tried[t].recall["switch"] >= reference.context["switch"] - SWITCH_LOSS]
    best = max(allowed or THRESHOLDS,
               key=lambda t: np.mean([tried[t].intact[k] for k in FOLLOW_UPS]))
    return best, tried


def block_report(held: BlockScores, reference: Scores, tried: dict[Thresholds, BlockScores],
                 best: Thresholds, dev_reference: Scores) -> str:
    lines = [
        "", f"Tool blocks kept across turns (planner/tool_block.py: strong match {best[0]:g}, add "
        f"match {best[1]:g}; the code's defaults are {STRONG_MATCH:g} and {ADD_MATCH:g}), "
        "held-out half:", "",
        "| kind | recall, fresh candidates every turn | recall, kept blocks | blocks kept "
        "| kept as they were | tools in the block (median) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        lines.append(f"| {kind} | {reference.context[kind]:.3f} | {held.recall[kind]:.3f} "
                     f"| {held.kept[kind]:.0%} | {held.intact[kind]:.0%} | {held.size[kind]:g} |")
    switch = dev_reference.context["switch"] - SWITCH_LOSS
    lines += ["", "The thresholds, on the dev half: the most blocks kept as they were over the "
              "follow-up kinds, with recall on each follow-up kind no worse than fresh "
              f"candidates every turn and `switch` recall at least {switch:.3f}:", "",
              "| strong | add | " + " | ".join(f"recall, {k}" for k in KINDS)
              + " | kept as they were, follow-ups |",
              "|---|---|" + "---|" * (len(KINDS) + 1)]
    for limits, scores in tried.items():
        mark = " (chosen)" if limits == best else ""
        lines.append(f"| {limits[0]:g}{mark} | {limits[1]:g} | "
                     + " | ".join(f"{scores.recall[k]:.3f}" for k in KINDS)
                     + f" | {np.mean([scores.intact[k] for k in FOLLOW_UPS]):.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true", help="fewer conversations; print only")
    args = parser.parse_args(argv)
    started = time.monotonic()
    talks = conversations(args.data, QUICK_PER_KIND if args.quick else PER_KIND)
    pool, _ = metatool_pools(args.data)
    cache = EmbeddingCache(SentenceTransformerEmbedder(BUNDLED_MODEL))
    searcher = Searcher(build_index(pool.tools, cache, RankingWeights()), cache)
    best, tried = tune(searcher, [t for t in talks if not t.held_out])
    searcher.index.weights = msgspec.structs.replace(searcher.index.weights, context=best[0],
                                                     context_share=best[1])
    dev = [t for t in talks if not t.held_out]
    held = [t for t in talks if t.held_out]
    dev_reference, reference = score(searcher, dev), score(searcher, held)
    limits, blocks = tune_block(searcher, dev, dev_reference)
    counts = {k: sum(1 for t in held if t.kind == k) for k in KINDS}
    markdown = (BEGIN + "\n" + report(reference, tried, best, counts, time.monotonic() - started)
                + block_report(block_score(searcher, held, limits), reference, blocks, limits,
                               dev_reference) + "\n" + END)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))


if __name__ == "__main__":
    main()
