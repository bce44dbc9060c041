"""What a search embeds for a request, and how those vectors become the search's query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools.embed import Vectors
from tools.index import QueryPart
from tools.sentences import split_request

FRAMING = "A user asks: {request} Which tool should be used?"
"""The request as a question of which tool answers it. MiniLM learnt from question and answer
pairs, and a tool's description reads like an answer; framed, a conversational request
("Can you recommend a hotel in Paris?") leans toward what it asks to be done rather than the
things it names."""


def search_texts(request: str, framing: float) -> list[str]:
    """The texts to embed: the request; then, when `framing` is above 0, the request framed
    (`FRAMING`); then its sentences when it has two or more (tools/sentences.py)."""
    texts = [request]
    if framing > 0:
        texts.append(FRAMING.format(request=request))
    sentences = split_request(request)
    if len(sentences) > 1:
        texts += sentences
    return texts


def search_query(
    texts: Sequence[str], vectors: Vectors, framing: float
) -> tuple[Vectors, list[QueryPart]]:
    """The request's vector and its sentences as `QueryPart`s, from `search_texts(...,
    framing)` and their embeddings (one row per text). The request's vector is its own
    embedding and the framed one's, `framing` being the framed one's share, normalised."""
    if len(texts) != len(vectors):
        raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
    first_sentence = 1
    vector = vectors[0]
    if framing > 0:
        first_sentence = 2
        mixed = (1.0 - framing) * vectors[0] + framing * vectors[1]
        norm = float(np.linalg.norm(mixed))
        vector = (mixed / norm if norm > 0 else mixed).astype(np.float32)
    parts = [
        QueryPart(text=text, vector=part)
        for text, part in zip(texts[first_sentence:], vectors[first_sentence:], strict=True)
    ]
    return vector, parts
