"""The steps of a plan read out of its JSON text while the model is still writing it."""

from __future__ import annotations

_OPEN, _CLOSE = "{[", "}]"


class StepScanner:
    """Reads `{"steps": [{...}, {...}, ...]}` as it streams in and hands out the text of each
    step object the moment its closing brace arrives. It tracks nesting and strings only, so a
    step's text is cut exactly where a JSON parser would cut it; whether the text is a valid
    step is for the caller to check."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = self._escaped = False
        self._key: list[str] | None = None  # a string being read at the top level
        self._last_key = ""
        self._steps_depth: int | None = None  # the depth inside the "steps" array
        self._step: list[str] | None = None

    def feed(self, text: str) -> list[str]:
        """The step objects completed by this piece of text, in order."""
        done: list[str] = []
        for char in text:
            if self._step is not None:
                self._step.append(char)
            if self._in_string:
                self._in_string_char(char)
            elif char == '"':
                self._in_string = True
                self._key = [] if self._depth == 1 else None
            elif char in _OPEN:
                self._open(char)
            elif char in _CLOSE:
                finished = self._close()
                if finished is not None:
                    done.append(finished)
        return done

    def _in_string_char(self, char: str) -> None:
        if self._escaped:
            self._escaped = False
        elif char == "\\":
            self._escaped = True
        elif char == '"':
            self._in_string = False
            if self._key is not None:
                self._last_key, self._key = "".join(self._key), None
            return
        if self._key is not None:
            self._key.append(char)

    def _open(self, char: str) -> None:
        if char == "[" and self._depth == 1 and self._last_key == "steps":
            self._steps_depth = 2
        elif char == "{" and self._depth == self._steps_depth and self._step is None:
            self._step = [char]
        self._depth += 1

    def _close(self) -> str | None:
        self._depth -= 1
        if self._depth == 1:
            self._steps_depth = None
        if self._step is not None and self._depth == self._steps_depth:
            step, self._step = "".join(self._step), None
            return step
        return None
