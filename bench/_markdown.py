"""Where benchmark results go: generated blocks between markers in bench/BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BENCHMARKS = Path(__file__).with_name("BENCHMARKS.md")

Block = tuple[str, tuple[str, str], str]
"""(section heading, (begin marker, end marker), the generated markdown between them)."""


def write_sections(path: Path, blocks: Sequence[Block]) -> None:
    """Replace each generated block, or add its section at the end; other text stays."""
    text = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    for heading, (begin, end), block in blocks:
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text, "utf-8")


def publish(markdown: str, *, quick: bool, heading: str, markers: tuple[str, str]) -> None:
    """Print a run's block; a full run also writes it into BENCHMARKS.md."""
    print(markdown)
    if not quick:
        write_sections(BENCHMARKS, [(heading, markers, markdown)])
