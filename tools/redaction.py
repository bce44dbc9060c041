"""Secrets kept out of everything written out: the errors a model reads, call records, logs
and spans."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""Shorter values are left alone: they cannot be told apart from ordinary text, and replacing
one (a header `X-Api-Version: 2`, say) would blank out every occurrence of it."""

_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|cookie|password|signature|session", re.I)


def header_credentials(headers: Mapping[str, str]) -> list[str]:
    """The values of headers that carry credentials (Authorization, X-Api-Key, Cookie ...),
    and the credential alone of a `Scheme credential` value such as `Bearer abc`."""
    found: list[str] = []
    for name, value in headers.items():
        if _CREDENTIAL_HEADER.search(name):
            found.append(value)
            _scheme, _, credential = value.partition(" ")
            if credential.strip():
                found.append(credential.strip())
    return found


class Redactor:
    """Replaces known secrets wherever they would appear, the longest first (so a secret that
    contains another is replaced whole)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
        self.secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text
