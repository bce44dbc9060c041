"""The move a request's embedding makes when the request is framed as a question of which tool
to use, measured once per model and applied to every request searched."""

from __future__ import annotations

import numpy as np

from tools.embed import Vectors

FRAMING = "A user asks: {request} Which tool should be used?"
"""MiniLM learnt from question and answer pairs, and a tool's description reads like an answer.
Framed this way, a conversational request ("Can you help me find flights to Tokyo?") leans
toward what it asks to be done rather than the things it names."""

SAMPLE_REQUESTS = (
    "What's the weather going to be like in Chicago this weekend?",
    "Book me a table for two at an Italian place near the office tonight.",
    "How much is 250 euros in Japanese yen?",
    "Find me a cheap flight from Madrid to Berlin next Friday.",
    "Can you summarise this PDF report for me?",
    "Translate 'where is the train station' into German.",
    "What is the derivative of x squared times sine of x?",
    "Send an email to my manager saying I will be late tomorrow.",
    "Add a dentist appointment to my calendar on Tuesday at 3pm.",
    "Play some relaxing jazz music.",
    "I need a new pair of hiking boots under 100 dollars.",
    "What are the top news stories in Brazil today?",
    "Why does my Python script raise a KeyError?",
    "How many calories are in a banana?",
    "Give me a vegetarian lasagna recipe.",
    "Who won the last Champions League final?",
    "Are there any remote data analyst jobs in Canada?",
    "Show me two-bedroom apartments for rent in Austin.",
    "Make this photo look brighter and remove the background.",
    "What are the penalties for speeding in California?",
    "Explain photosynthesis to a ten-year-old.",
    "What is the current stock price of Microsoft?",
    "Calculate the monthly payment on a 300,000 dollar mortgage at 6 percent over 30 years.",
    "Set a timer for twenty minutes.",
    "Is example.com available to register?",
    "Check my website for broken links and slow pages.",
    "Recommend a good science fiction novel.",
    "How far is it from Lyon to Geneva by car?",
    "I'm feeling anxious lately, any tips to sleep better?",
    "Create a short video ad for my bakery.",
    "What's the population of Kenya?",
    "Write a polite reply declining the meeting invitation.",
    "Which laptop is better for video editing, the MacBook Pro or the Dell XPS?",
    "Track my package from the order I placed last week.",
    "What time is it in Seoul right now?",
    "Find a plumber near me who is open on Sundays.",
    "Convert 5 miles to kilometres.",
    "What were the main causes of the First World War?",
    "Help me plan a three-day trip to Lisbon.",
    "Generate a logo idea for a coffee shop called Bean There.",
)
"""Requests of many kinds, written for this purpose (none is taken from a benchmark set)."""


def shift_texts() -> list[str]:
    """What to embed to measure the shift: each sample request, then each one framed."""
    return [*SAMPLE_REQUESTS, *(FRAMING.format(request=r) for r in SAMPLE_REQUESTS)]


def framing_shift(vectors: Vectors) -> Vectors:
    """The average move from a sample request's embedding to its framed one's, from the
    embeddings of `shift_texts()` in order.

    Framing moves nearly every request the same way (for all-MiniLM-L6-v2 the average move over
    these 40 requests and over 3,000 benchmark requests have cosine 0.97), so adding this move
    does what embedding each request framed as well would, without the second embedding."""
    count = len(SAMPLE_REQUESTS)
    if vectors.shape[0] != 2 * count:
        raise ValueError(f"{vectors.shape[0]} vectors for {2 * count} sample texts")
    return (vectors[count:] - vectors[:count]).mean(axis=0).astype(np.float32)


def framed(vector: Vectors, shift: Vectors, weight: float) -> Vectors:
    """A request's embedding moved by `weight` times the framing shift, normalised."""
    moved = vector + weight * shift
    norm = float(np.linalg.norm(moved))
    return (moved / norm if norm > 0 else moved).astype(np.float32)
