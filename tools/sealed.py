"""Secrets sealed for storage: tool signing secrets, write-only headers, and MCP servers' header
and environment values are kept in Postgres encrypted with SECRET_KEY (Fernet: AES-128-CBC
with an HMAC-SHA256), so a copy of the database or a backup does not give them away.

A sealed value reads `sealed:v1:<token>`. Values stored before sealing existed read back as they
are, and are sealed by `switchboard secrets rotate`, which also re-seals every value under the
current key after SECRET_KEY changes (the old key stays in SECRET_KEY_PREVIOUS until then).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tools.errors import SecretKeyMismatch

PREFIX = "sealed:v1:"
KEY_FILE = "secret.key"
"""Where the embedded default keeps a generated key, under DATA_DIR."""


class SecretBox:
    """Seals with the first key; opens what any of the keys sealed."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a SecretBox needs a key")
        self._fernet = MultiFernet([Fernet(_fernet_key(k)) for k in keys])

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret; a value stored before sealing comes back as it is."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMismatch() from exc

    def reseal(self, stored: str) -> str:
        """The value sealed under the current key (a plain one sealed for the first time)."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            return PREFIX + self._fernet.rotate(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyMismatch() from exc

    def seal_values(self, values: Mapping[str, str]) -> dict[str, str]:
        return {name: self.seal(value) for name, value in values.items()}

    def open_values(self, values: Mapping[str, str]) -> dict[str, str]:
        return {name: self.open(value) for name, value in values.items()}


def load_keys(secret_key: str | None, previous: str, data_dir: Path) -> list[str]:
    """SECRET_KEY, then the keys in SECRET_KEY_PREVIOUS; without SECRET_KEY, a key generated
    once into DATA_DIR (right for one embedded instance; replicas must share SECRET_KEY)."""
    older = [k.strip() for k in previous.split(",") if k.strip()]
    if secret_key:
        return [secret_key, *older]
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return [path.read_text().strip(), *older]


def _fernet_key(key: str) -> bytes:
    """Any passphrase as a Fernet key (its SHA-256, base64): a generated key and a person's
    phrase work alike."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())
