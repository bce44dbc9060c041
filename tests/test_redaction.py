"""Which values count as secrets, and how they are kept out of text: one rule for the errors a
model reads, MCP server errors and spans."""

from __future__ import annotations

from tools.redaction import Redactor, header_credentials


def test_credential_headers_are_secrets_and_other_headers_are_not() -> None:
    headers = {"Accept": "application/json", "Authorization": "Bearer abc12345",
               "X-Api-Key": "k-987654", "Cookie": "session=s-1234"}
    assert header_credentials(headers) == [
        "Bearer abc12345", "abc12345", "k-987654", "session=s-1234"]
    redact = Redactor(header_credentials(headers))
    assert redact("got abc12345 and k-987654 as application/json") == (
        "got [redacted] and [redacted] as application/json")


def test_a_secret_that_contains_another_is_replaced_whole() -> None:
    redact = Redactor(["abcd", "abcd-efgh"])
    assert redact("sent abcd-efgh, then abcd") == "sent [redacted], then [redacted]"


def test_values_shorter_than_four_characters_are_left_alone() -> None:
    redact = Redactor(["2", "abc", None, "", "wxyz"])
    assert redact.secrets == ["wxyz"]
    assert redact("version 2 of abc, key wxyz") == "version 2 of abc, key [redacted]"
