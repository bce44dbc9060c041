"""A streamed reply's text as its client sees it, for a backend whose text may hold tool calls
and thinking (planner/text_calls.py `StreamedText`), however the stream cuts it."""

from __future__ import annotations

import pytest

from planner.messages import ContentDelta, Delta, ReasoningDelta
from planner.text_calls import StreamedText


def shown(text: str, piece: int, *, tool_calls: bool = True, thinking: bool = True
          ) -> tuple[str, str]:
    stream = StreamedText(tool_calls=tool_calls, thinking=thinking)
    deltas: list[Delta] = []
    for start in range(0, len(text), piece):
        deltas += stream.feed(text[start:start + piece])
    deltas += stream.flush()
    return ("".join(d.text for d in deltas if isinstance(d, ContentDelta)),
            "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)))


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_calls_are_held_back_and_thinking_comes_out_as_reasoning(piece: int) -> None:
    text = ('  <think>Weather, so the tool.</think>Let me look. <tool_call>\n{"name": "w", '
            '"arguments": {}}\n</tool_call> Back < soon <tool')
    assert shown(text, piece) == ("Let me look.  Back < soon <tool", "Weather, so the tool.")


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_text_without_tags_streams_through_as_it_comes(piece: int) -> None:
    assert shown("It is 7 < 9 degrees.", piece) == ("It is 7 < 9 degrees.", "")


def test_a_tag_cut_in_two_is_held_until_it_is_known() -> None:
    stream = StreamedText(tool_calls=True, thinking=False)
    assert stream.feed("Sure. <tool_") == [ContentDelta("Sure. ")]
    assert stream.feed('call>{"name": "w"}</tool_call>done') == [ContentDelta("done")]


def test_thinking_is_not_read_when_the_backend_does_not_say_so() -> None:
    assert shown("<think>hm</think>Hi", 4, thinking=False) == ("<think>hm</think>Hi", "")
