"""Settings read once from the environment into a typed struct."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    """Postgres to use; unset starts an embedded server under `data_dir`."""
    model_url: str = "http://localhost:30000/v1"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir_path: str = "data"
    search_k: int = 10
    log_level: str = "INFO"

    @property
    def data_dir(self) -> Path:
        return Path(self.data_dir_path)


# name in the environment -> (field, what a valid value looks like)
_ENV: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("database_url", "a postgresql:// URL"),
    "MODEL_URL": ("model_url", "the model server's base URL including /v1"),
    "EMBEDDING_MODEL": ("embedding_model", "a sentence-transformers model name or path"),
    "HOST": ("host", "an interface address such as 127.0.0.1 or 0.0.0.0"),
    "PORT": ("port", "a TCP port number between 1 and 65535"),
    "DATA_DIR": ("data_dir_path", "a directory path"),
    "SEARCH_K": ("search_k", "a positive integer"),
    "LOG_LEVEL": ("log_level", "DEBUG, INFO, WARNING or ERROR"),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment once; an unusable value names the variable and what it expects."""
    env = os.environ if environ is None else environ
    raw = {field: env[name] for name, (field, _) in _ENV.items() if env.get(name, "") != ""}
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc
    if not 0 < settings.port < 65536:
        raise SettingsError(f"PORT={settings.port} is out of range: expected {_ENV['PORT'][1]}")
    if settings.search_k < 1:
        raise SettingsError(f"SEARCH_K={settings.search_k}: expected {_ENV['SEARCH_K'][1]}")
    return settings


def _explain(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    for name, (field, expected) in _ENV.items():
        if f"`$.{field}`" in message:
            return f"{name} is invalid ({message.split(' - ')[0]}): expected {expected}"
    return message
