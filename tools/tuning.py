"""Fine-tunes an embedding model on (request, tool text) pairs, as a process of its own:

    python -m tools.tuning --base MODEL --pairs pairs.json --out FOLDER [--epochs N]
                           [--batch-size N] [--learning-rate X] [--threads N]

Each request is pulled towards its tool's text and away from the other tools of its batch
(in-batch negatives, sentence-transformers' MultipleNegativesRankingLoss) and from its hard
negative, a tool the current model ranks above it. A batch never holds one tool twice, since
its other requests would count as negatives of their own tool. Progress is printed as one JSON
object per line (`{"step": 3, "steps": 40, "loss": 1.9}`); the model is saved to `--out`.

It runs at the lowest CPU priority (nice 19), so the service's turns come first and training
takes what they leave: see bench/BENCHMARKS.md, "A tenant's own embedder".
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from tools.embed import resolve_model


class TrainingPair(msgspec.Struct, frozen=True, kw_only=True):
    request: str
    tool: str
    """The tool's text (`tools.text.tool_text`), what the request should find."""
    negative: str | None = None
    """A wrong tool's text the current model ranks high for the request."""


class TrainOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_seq_length: int = 128
    """Tool texts are cut to this many tokens while training (memory and time grow with it)."""
    seed: int = 1234


Progress = Callable[[int, int, float], None]


def batches(pairs: Sequence[TrainingPair], size: int, rng: random.Random
            ) -> list[list[TrainingPair]]:
    """The pairs shuffled into batches of at most `size` in which no tool text (positive or
    negative) appears twice."""
    pending = list(pairs)
    rng.shuffle(pending)
    out: list[list[TrainingPair]] = []
    while pending:
        batch: list[TrainingPair] = []
        seen: set[str] = set()
        rest: list[TrainingPair] = []
        for pair in pending:
            texts = {pair.tool, pair.negative} - {None}
            if len(batch) < size and not texts & seen:
                batch.append(pair)
                seen |= texts  # type: ignore[arg-type]
            else:
                rest.append(pair)
        out.append(batch)
        pending = rest
    return out


def train(base: str, pairs: Sequence[TrainingPair], out: Path, options: TrainOptions,
          progress: Progress) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    model = SentenceTransformer(resolve_model(base), device="cpu")
    model.max_seq_length = options.max_seq_length
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate)
    plan = [batches(pairs, options.batch_size, rng) for _ in range(options.epochs)]
    steps = sum(len(epoch) for epoch in plan)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    model.train()
    step = 0
    for epoch in plan:
        for batch in epoch:
            hard = all(p.negative is not None for p in batch)
            columns = [[p.request for p in batch], [p.tool for p in batch]]
            if hard:
                columns.append([p.negative or "" for p in batch])
            features = [model.tokenize(texts) for texts in columns]
            value = loss(features, torch.zeros(len(batch)))
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            progress(step, steps, float(value.detach()))
    model.save(str(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fine-tune an embedding model on pairs.")
    parser.add_argument("--base", required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--options", default="{}", help="TrainOptions as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.nice(19)  # turns first: training takes what the service leaves
    import torch

    torch.set_num_threads(args.threads)
    pairs = msgspec.json.decode(args.pairs.read_bytes(), type=list[TrainingPair])
    options = msgspec.json.decode(args.options, type=TrainOptions)

    def report(step: int, steps: int, loss: float) -> None:
        print(json.dumps({"step": step, "steps": steps, "loss": round(loss, 4)}), flush=True)

    train(args.base, pairs, args.out, options, report)


if __name__ == "__main__":
    main()
