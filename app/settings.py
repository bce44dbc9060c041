"""Settings read once from the environment into a typed struct."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from app.errors import SettingsError
from planner.engine import EngineSettings
from planner.model_client import ModelBackend, Price
from planner.quotas import parse_limits
from tools.egress import AllowlistInvalid, EgressPolicy
from tools.sealed import SecretBox, load_keys

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    """Postgres to use; unset starts an embedded server under `data_dir`."""
    model_url: str = "http://localhost:30000/v1"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    embedding_runtime: Literal["auto", "onnx", "torch"] = "auto"
    """Where the embedding transformer runs: ONNX Runtime when it can ("auto"), or one of them."""
    host: str = "127.0.0.1"
    port: int = 8000
    liveness_port: int | None = None
    """Where `GET /live` answers from a thread of its own (app/liveness.py); unset: nowhere."""
    liveness_max_lag_s: float = 10.0
    """How long the event loop may go without running before `/live` answers 503."""
    data_dir_path: str = "data"
    search_k: int = 10
    search_max_wait_s: float = 0.25
    """How long a search request may expect to wait for the embedding model behind others;
    past it, it gets a 503 with Retry-After (turns' own searches always wait)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    model_name: str = "default"
    model_api_key: str | None = None
    model_context_window: int | None = None
    """The default backend's context window in tokens; unset: asked of the server."""
    model_price: str = ""
    """The default backend's `price`, as JSON (see MODEL_BACKENDS); unset: none."""
    model_backends: str = ""
    """JSON list of further backends: [{"name", "base_url", "model", "api_key", ...}]."""
    engine: EngineSettings = EngineSettings()
    """The turn engine's limits: CANDIDATE_K, MAX_STEPS, MAX_REPLANS, MAX_PARALLEL_CALLS,
    MAX_PLAN_STEPS, HISTORY_TOKEN_BUDGET, TURN_LEASE_S, APPROVAL_TIMEOUT_S,
    CLIENT_TOOL_TIMEOUT_S."""
    max_output_bytes: int = 65_536
    secret_key: str | None = None
    """Seals tools' secrets and MCP servers' write-only values in Postgres (tools/sealed.py);
    unset: a key generated into DATA_DIR. Replicas must share it."""
    secret_key_previous: str = ""
    """Keys that sealed values before SECRET_KEY changed, comma-separated, until `switchboard
    secrets rotate` has re-sealed everything."""
    retention_days: float = 30.0
    """Idempotency records, trace spans and turns' stored events are deleted after this many
    days (app/retention.py)."""
    retention_interval_s: float = 3600.0
    """How often the retention job runs (on one replica at a time)."""
    tenant_models_held: int = 4
    """Tenants' own embedding models a replica keeps loaded (about 100 MB each); the one used
    longest ago is let go and loaded again (a few seconds) when next used."""
    token_quotas: str = ""
    """Tokens per UTC day, as JSON: tenant (or "*") -> backend (or "*") -> tokens; unset:
    none (planner/quotas.py)."""
    sse_keepalive_s: float = 15.0
    """An SSE stream idle this long gets a keep-alive comment (proxies cut idle streams)."""
    shutdown_grace_s: float = 20.0
    """On SIGTERM, how long turns in flight may take to finish before they are handed over to
    another replica (which takes them over within a third of TURN_LEASE_S)."""
    durable_steps: bool = False
    """Whether each step of a turn waits for Postgres to flush it to disk. Off: a turn's start,
    pause and end wait, and so does a step that calls a tool not marked idempotent; the other
    steps' rows are committed without waiting (a Postgres crash may lose their last fraction of a
    second; a service crash loses nothing)."""
    register_builtins: bool = True
    tracing: bool = True
    admin_key: str | None = None
    rate_limit_per_minute: int = 6000
    """Requests per minute per API key; 0 turns rate limiting off."""
    max_body_bytes: int = 10_000_000
    egress_allowlist: str = ""
    """Non-public destinations tools may call: host names, IPs or CIDRs, comma-separated."""
    mcp_connect_timeout_s: float = 10.0
    """How long an MCP server may take to connect and to list its tools."""
    mcp_stdio_commands: str = ""
    """Commands stdio MCP servers may be started with, comma-separated; * allows any; empty
    allows none (a stdio server runs on this host)."""

    @property
    def mcp_commands(self) -> frozenset[str] | None:
        """MCP_STDIO_COMMANDS as a set; None when any command is allowed."""
        listed = {c.strip() for c in self.mcp_stdio_commands.split(",") if c.strip()}
        return None if "*" in listed else frozenset(listed)

    @property
    def data_dir(self) -> Path:
        return Path(self.data_dir_path)


# name in the environment -> (field, or engine.field, and what a valid value looks like)
_ENV: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("database_url", "a postgresql:// URL"),
    "MODEL_URL": ("model_url", "the model server's base URL including /v1"),
    "EMBEDDING_MODEL": ("embedding_model", "a sentence-transformers model name or path"),
    "EMBEDDING_RUNTIME": ("embedding_runtime", "auto, onnx or torch"),
    "HOST": ("host", "an interface address such as 127.0.0.1 or 0.0.0.0"),
    "PORT": ("port", "a TCP port number between 1 and 65535"),
    "LIVENESS_PORT": ("liveness_port", "a TCP port number between 1 and 65535, not PORT"),
    "LIVENESS_MAX_LAG_S": ("liveness_max_lag_s", "seconds, a positive number"),
    "DATA_DIR": ("data_dir_path", "a directory path"),
    "SEARCH_K": ("search_k", "a positive integer"),
    "SEARCH_MAX_WAIT_S": ("search_max_wait_s", "seconds, a positive number"),
    "LOG_LEVEL": ("log_level", "DEBUG, INFO, WARNING or ERROR"),
    "MODEL_NAME": ("model_name", "the model name the server expects (SGLang: any, or served name)"),
    "MODEL_API_KEY": ("model_api_key", "a bearer token for the model server"),
    "MODEL_CONTEXT_WINDOW": ("model_context_window", "a number of tokens, at least 1024"),
    "MODEL_PRICE": ("model_price", 'JSON like {"input": 0.2, "output": 0.8, "cached_input": 0.05}'
                                   " (per million tokens)"),
    "MODEL_BACKENDS": ("model_backends", 'a JSON list like [{"name": "big", "base_url": "..."}]'),
    "CANDIDATE_K": ("engine.candidate_k", "a positive integer"),
    "MAX_STEPS": ("engine.max_steps", "a positive integer"),
    "MAX_REPLANS": ("engine.max_replans", "a non-negative integer"),
    "MAX_PARALLEL_CALLS": ("engine.max_parallel_calls", "a positive integer"),
    "MAX_PLAN_STEPS": ("engine.max_plan_steps", "a positive integer"),
    "EAGER_PLANS": ("engine.eager_plans", "true or false"),
    "JOIN_MODEL": ("engine.join_model", "the name of a model backend (MODEL_BACKENDS)"),
    "MAX_OUTPUT_BYTES": ("max_output_bytes", "a positive integer (bytes of tool output kept)"),
    "HISTORY_TOKEN_BUDGET": ("engine.history_token_budget", "a positive integer"),
    "TURN_LEASE_S": ("engine.turn_lease_s", "seconds, a positive number"),
    "SHUTDOWN_GRACE_S": ("shutdown_grace_s", "seconds, 0 or more"),
    "SSE_KEEPALIVE_S": ("sse_keepalive_s", "seconds, a positive number"),
    "RETENTION_DAYS": ("retention_days", "days, a positive number"),
    "RETENTION_INTERVAL_S": ("retention_interval_s", "seconds, a positive number"),
    "TENANT_MODELS_HELD": ("tenant_models_held", "a positive integer"),
    "SECRET_KEY": ("secret_key", "a passphrase or a generated key, the same on every replica"),
    "SECRET_KEY_PREVIOUS": ("secret_key_previous", "earlier SECRET_KEY values, comma-separated"),
    "TOKEN_QUOTAS": ("token_quotas", 'JSON like {"*": {"*": 2000000}, "acme": {"big": 100000}} '
                                     "(tokens per UTC day, by tenant and model backend)"),
    "APPROVAL_TIMEOUT_S": ("engine.approval_timeout_s", "seconds, a positive number"),
    "CLIENT_TOOL_TIMEOUT_S": ("engine.client_tool_timeout_s", "seconds, a positive number"),
    "DURABLE_STEPS": ("durable_steps", "true or false"),
    "REGISTER_BUILTINS": ("register_builtins", "true or false"),
    "TRACING": ("tracing", "true or false"),
    "ADMIN_KEY": ("admin_key", "the admin API key to accept for the default tenant"),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", "requests per minute per key; 0 = off"),
    "MAX_BODY_BYTES": ("max_body_bytes", "the largest request body accepted, in bytes"),
    "EGRESS_ALLOWLIST": ("egress_allowlist", "host names, IPs or CIDRs, comma-separated"),
    "MCP_CONNECT_TIMEOUT_S": ("mcp_connect_timeout_s", "seconds, a positive number"),
    "MCP_STDIO_COMMANDS": ("mcp_stdio_commands", "commands, comma-separated, or * for any"),
}


def secret_box(settings: Settings) -> SecretBox:
    """What seals and opens stored secrets: SECRET_KEY (and SECRET_KEY_PREVIOUS), else the key
    generated into DATA_DIR."""
    return SecretBox(load_keys(settings.secret_key, settings.secret_key_previous,
                               settings.data_dir))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment once; an unusable value names the variable and what it expects."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {"engine": {}}
    for name, (path, _) in _ENV.items():
        if env.get(name, "") != "":
            *parents, field = path.split(".")
            (raw[parents[0]] if parents else raw)[field] = env[name]
    if "log_level" in raw:
        raw["log_level"] = raw["log_level"].upper()
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc
    if not 0 < settings.port < 65536:
        raise SettingsError(f"PORT={settings.port} is out of range: expected {_ENV['PORT'][1]}")
    if settings.liveness_port is not None and (
        not 0 < settings.liveness_port < 65536 or settings.liveness_port == settings.port
    ):
        raise SettingsError(f"LIVENESS_PORT={settings.liveness_port}: expected "
                            f"{_ENV['LIVENESS_PORT'][1]}")
    positive = ("SEARCH_K", "SEARCH_MAX_WAIT_S", "LIVENESS_MAX_LAG_S", "CANDIDATE_K",
                "MAX_STEPS", "HISTORY_TOKEN_BUDGET", "TURN_LEASE_S", "MAX_PARALLEL_CALLS",
                "MAX_PLAN_STEPS", "MAX_OUTPUT_BYTES", "MCP_CONNECT_TIMEOUT_S", "SSE_KEEPALIVE_S",
                "RETENTION_DAYS", "RETENTION_INTERVAL_S", "TENANT_MODELS_HELD")
    for name in positive:
        value = _value(settings, _ENV[name][0])
        if value <= 0:
            raise SettingsError(f"{name}={value}: expected {_ENV[name][1]}")
    try:
        parse_limits(settings.token_quotas)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SettingsError(f"TOKEN_QUOTAS: {exc}; expected {_ENV['TOKEN_QUOTAS'][1]}") from exc
    if settings.shutdown_grace_s < 0:
        raise SettingsError(f"SHUTDOWN_GRACE_S={settings.shutdown_grace_s}: expected "
                            f"{_ENV['SHUTDOWN_GRACE_S'][1]}")
    if settings.model_context_window is not None and settings.model_context_window < 1024:
        raise SettingsError(f"MODEL_CONTEXT_WINDOW={settings.model_context_window}: expected "
                            f"{_ENV['MODEL_CONTEXT_WINDOW'][1]}")
    try:
        EgressPolicy.parse(settings.egress_allowlist)
    except AllowlistInvalid as exc:
        raise SettingsError(f"EGRESS_ALLOWLIST: {exc}; expected "
                            f"{_ENV['EGRESS_ALLOWLIST'][1]}") from exc
    names = [b.name for b in model_backends(settings)]
    join = settings.engine.join_model
    if join is not None and join not in names:
        raise SettingsError(f"JOIN_MODEL={join}: no such model backend; configured: "
                            f"{', '.join(names)} (MODEL_BACKENDS)")
    return settings


def model_backends(settings: Settings) -> list[ModelBackend]:
    """The default backend at MODEL_URL, then those in MODEL_BACKENDS, by name."""
    default = ModelBackend(
        name="default",
        base_url=settings.model_url,
        model=settings.model_name,
        api_key=settings.model_api_key,
        price=_price(settings.model_price),
        context_window=settings.model_context_window,
    )
    if not settings.model_backends:
        return [default]
    try:
        more = msgspec.json.decode(settings.model_backends, type=list[ModelBackend])
    except msgspec.DecodeError as exc:
        raise SettingsError(
            f"MODEL_BACKENDS is invalid ({exc}): expected {_ENV['MODEL_BACKENDS'][1]}"
        ) from exc
    names = [b.name for b in [default, *more]]
    if len(set(names)) != len(names):
        raise SettingsError(f"MODEL_BACKENDS: backend names must be unique, got {names}")
    return [default, *more]


def _price(text: str) -> Price | None:
    if not text:
        return None
    try:
        return msgspec.json.decode(text, type=Price)
    except msgspec.DecodeError as exc:
        raise SettingsError(
            f"MODEL_PRICE is invalid ({exc}): expected {_ENV['MODEL_PRICE'][1]}") from exc


def _value(settings: Settings, path: str) -> Any:
    found: Any = settings
    for field in path.split("."):
        found = getattr(found, field)
    return found


def _explain(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    for name, (field, expected) in _ENV.items():
        if f"`$.{field}`" in message:
            return f"{name} is invalid ({message.split(' - ')[0]}): expected {expected}"
    return message
