"""A tool's error body as a model should read it: a web server's HTML error page becomes its
title and a short plain-text excerpt, not hundreds of characters of markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SPACE = re.compile(r"\s+")
_SKIPPED = frozenset({"script", "style", "head", "noscript", "svg", "template"})


def looks_like_html(content_type: str | None, text: str) -> bool:
    if content_type is not None and "html" in content_type.lower():
        return True
    start = text.lstrip()[:15].lower()
    return start.startswith(("<!doctype html", "<html"))


def plain_excerpt(html: str, limit: int) -> str:
    """The page's title and visible text, whitespace collapsed, cut to `limit` characters."""
    reader = _VisibleText()
    reader.feed(html)
    reader.close()
    title = _SPACE.sub(" ", "".join(reader.title)).strip()
    body = _SPACE.sub(" ", " ".join(reader.text)).strip()
    if title and body.startswith(title):
        body = body[len(title):].strip()
    text = f"{title}: {body}" if title and body else title or body
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class _VisibleText(HTMLParser):
    """Collects the text a browser would show, and the title apart (html.parser runs in time
    linear in the page; a malformed page yields what text it has)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED:
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skipping:
            self.text.append(data)
