"""The Litestar application: its lifespan owns the database, the embedder, the registry and
the turn engine."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from app.allow import AllowHeaders
from app.api_docs import DOCS_ROUTES, openapi_config
from app.auth import PUBLIC_PATHS, ApiKeys, KeyAuthentication, Welcome
from app.database import database, one_connection, progress_pool, redact_url
from app.guard import guard_request
from app.idempotency import IdempotencyKeys
from app.liveness import liveness
from app.logs import CHATTY_LOGGERS, LOG_FORMAT, chatty_level, keep_lines_whole
from app.openapi import finish_document
from app.problems import EXCEPTION_HANDLERS, turn_problem
from app.rate_limits import SharedRateLimit
from app.readiness import Readiness, ReadinessProbe
from app.retention import RetentionJob
from app.routes.chat_completions import create_chat_completion
from app.routes.conversations import ConversationController, TurnController
from app.routes.evals import EvalController
from app.routes.keys import KeyController
from app.routes.mcp import McpServerController
from app.routes.models import get_model, list_models
from app.routes.retrieval import RetrievalController
from app.routes.routers import RouterController
from app.routes.tools import ToolController
from app.routes.traces import TraceController
from app.routes.viewer import VIEWER_ROUTES
from app.settings import Settings, load_settings, model_backends, secret_box
from app.span_store import TraceReads
from app.telemetry import Telemetry, build_telemetry, name_by_route, request_span_details
from planner.conversations import Conversations
from planner.engine import TurnEngine
from planner.evals.runner import EvalRunner
from planner.evals.service import Evals
from planner.evals.store import EvalStore
from planner.event_log import EventLog
from planner.experts import ModelExperts
from planner.learning import TurnLearning
from planner.model_client import ChatModel, ModelClient, with_context_window
from planner.quotas import TokenQuotas, parse_limits
from planner.routers import Routers
from planner.store import PostgresTurnStore
from planner.supervisor import TurnSupervisor
from planner.text_calls import REASONING_FLAGS, TOOL_CALL_FLAGS
from tools.builtins import builtin_specs, default_builtins
from tools.egress import EgressPolicy, GuardedTransport
from tools.embed import Embedder, SentenceTransformerEmbedder
from tools.executors import ToolRunner
from tools.http_client import http_client
from tools.learning import Learning
from tools.mcp.servers import McpServers
from tools.registry import ToolRegistry
from tools.reseal import check_opens
from tools.search_queue import SearchQueue
from tools.slots import SharedSlots
from tools.sync import ChangeListener
from tools.tenant_models import ModelCache
from tools.tuning_jobs import RetrievalTraining

log = logging.getLogger("switchboard")


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
    tools_indexed: int


HEALTH_TIMEOUT_S = 2.0


@get("/health", tags=["service"],
     summary="Alive when it answers 200: the service serves and reaches Postgres")
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    """Asks Postgres on a connection of its own, so a pool busy with requests cannot hold the
    answer up. Model servers are `/ready`'s to ask."""
    registry: ToolRegistry = request.app.state.registry
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await request.app.state.health_pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("health check: database unreachable: %s", exc)
        body = Health("unavailable", f"unreachable: {type(exc).__name__}", 0)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    indexed = sum(registry.index_size(t) for t in registry.tenants())
    return Response(Health("ok", "ok", indexed))


@get("/ready", tags=["service"], cache_control=CacheControlHeader(no_store=True),
     summary="Ready for traffic when it answers 200: Postgres and every model backend answer",
     responses={503: ResponseSpec(Readiness, description="Something is down; `detail` and the "
                                  "checks say what")})
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """For load balancers; the answer is reused for READY_CACHE_S seconds."""
    probe: ReadinessProbe = request.app.state.readiness
    answer = await probe.check()
    status = HTTP_200_OK if answer.status == "ready" else HTTP_503_SERVICE_UNAVAILABLE
    return Response(answer, status_code=status)


def _freeze_start_up() -> None:
    """Leave what start-up made (the embedding model, modules, the loaded registry) out of the
    garbage collector's full passes: each scans every tracked object while holding the GIL, and
    with the model loaded that stopped the service, `/live`'s thread too, for up to 0.4 s
    (bench/BENCHMARKS.md, "Liveness under load")."""
    gc.collect()
    gc.freeze()


def _liveness(settings: Settings) -> contextlib.AbstractAsyncContextManager[object]:
    """`GET /live` on LIVENESS_PORT from the start of the lifespan (so a slow start-up is
    live too), when the port is set."""
    if settings.liveness_port is None:
        return contextlib.nullcontext()
    return liveness(settings.host, settings.liveness_port, settings.liveness_max_lag_s)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> Litestar:
    """The app; `embedder` lets several apps in one process share a loaded model."""
    settings = settings or load_settings()
    telemetry = build_telemetry(enabled=settings.tracing)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        keep_lines_whole()
        model = embedder or SentenceTransformerEmbedder(
            settings.embedding_model, runtime=settings.embedding_runtime
        )
        owner = uuid.uuid4().hex
        async with (
            _liveness(settings),
            database(settings.database_url, settings.data_dir, say_where=True) as (dsn, pool),
            one_connection(dsn) as health_pool,
            progress_pool(dsn, enabled=not settings.durable_steps) as progress,
            http_client(trust_env=True) as http,
            http_client(_guarded(settings)) as tool_http,
        ):
            app.state.pool, app.state.health_pool = pool, health_pool
            await ApiKeys(pool).bootstrap_admin(settings.admin_key, settings.data_dir)
            box = secret_box(settings)
            await check_opens(pool, box)  # a replica with the wrong SECRET_KEY stops here
            registry = ToolRegistry(pool, model, queue=SearchQueue(settings.search_max_wait_s),
                                    box=box, models=ModelCache(
                                        pool, settings.data_dir,
                                        held=settings.tenant_models_held))
            await registry.framing_shift()  # measured now, not on the first search
            listener = ChangeListener(registry, dsn)
            await listener.start()
            if settings.register_builtins:
                await _register_builtins(pool, registry)
            mcp_servers = McpServers(
                pool, registry, EgressPolicy.parse(settings.egress_allowlist),
                stdio_commands=settings.mcp_commands,
                connect_timeout_s=settings.mcp_connect_timeout_s,
            )
            models = await _models(settings, http)
            registry.admission.model_backends = sorted(models)
            registry.admission.egress = EgressPolicy.parse(settings.egress_allowlist)
            readiness = ReadinessProbe(health_pool, {n: m.backend for n, m in models.items()},
                                       http)
            _report_models(models, await readiness.check())
            runner = ToolRunner(tool_http, default_builtins(),
                                max_output_bytes=settings.max_output_bytes,
                                mcp=mcp_servers.sessions,
                                experts=ModelExperts(models, telemetry.tracer),
                                slots=SharedSlots(pool))
            store = PostgresTurnStore(pool, progress)
            learning = Learning(registry)
            training = RetrievalTraining(registry, settings.data_dir, owner)
            learner = TurnLearning(pool, learning)
            engine = TurnEngine(store, registry, runner, models,
                                default_model="default", settings=settings.engine, owner=owner,
                                problem_of=turn_problem, tracer=telemetry.tracer,
                                quotas=TokenQuotas(pool, parse_limits(settings.token_quotas)),
                                learner=learner)
            events = EventLog(pool, dsn)
            await events.start()
            supervisor = TurnSupervisor(store, owner, settings.engine.turn_lease_s,
                                        take_over=engine.take_over, resume=engine.resume_turn,
                                        running=engine.running, events=events)
            telemetry.store.start(pool)
            await supervisor.start()
            eval_store = EvalStore(pool)
            routers = Routers(pool, registry, eval_store)
            conversations = Conversations(engine, supervisor, store, routers)
            eval_runner = EvalRunner(eval_store, conversations, registry, owner=owner,
                                     lease_s=settings.engine.turn_lease_s)
            await eval_runner.start()
            retention = RetentionJob(pool, settings.retention_days,
                                     settings.retention_interval_s)
            retention.start()
            app.state.update({
                "registry": registry,
                "tool_http": tool_http,  # also fetches OpenAPI documents named by URL
                "servers": mcp_servers,
                "conversations": conversations,
                "idempotency": IdempotencyKeys(pool, conversations),
                "api_keys": ApiKeys(pool, _welcome(settings, registry)),
                "traces": TraceReads(pool),
                "evals": Evals(eval_runner.store, eval_runner, conversations),
                "routers": routers,
                "supervisor": supervisor,
                "events": events,
                "learning": learning,
                "learner": learner,
                "training": training,
                "readiness": readiness,
            })
            log.info(
                "ready: %d tools indexed", sum(registry.index_size(t) for t in registry.tenants())
            )
            _freeze_start_up()
            try:
                yield
            finally:
                gc.unfreeze()
                await retention.stop()
                await eval_runner.stop()
                await supervisor.stop(settings.shutdown_grace_s)
                await learner.settle()
                await training.stop()
                await events.stop()
                await mcp_servers.close()
                await listener.stop()
                await telemetry.store.stop()
                telemetry.shutdown()

    allow = AllowHeaders()
    app = Litestar(
        route_handlers=[health, ready, list_models, get_model, ToolController,
                        ConversationController, TraceController, KeyController, TurnController,
                        create_chat_completion, McpServerController, EvalController,
                        RouterController, RetrievalController,
                        *VIEWER_ROUTES, *DOCS_ROUTES],
        dependencies={name: _from_state(name) for name in DEPENDENCIES},
        middleware=_middleware(settings),
        request_max_body_size=settings.max_body_bytes,
        before_request=guard_request,
        before_send=[allow.before_send],
        plugins=_plugins(telemetry),
        logging_config=_logging(settings),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        state=State({"settings": settings, "telemetry": telemetry,
                     "started_at": int(time.time())}),
        openapi_config=openapi_config(),
        debug=False,
    )
    allow.learn(app)
    finish_document(app)
    return app


def begin_stop(app: Litestar, grace_s: float) -> None:
    """The process was asked to stop: its turns in flight have `grace_s` to finish, and it
    takes no new ones (planner/supervisor.py)."""
    supervisor: TurnSupervisor | None = app.state.get("supervisor")
    if supervisor is not None:
        supervisor.begin_stop(grace_s)


DEPENDENCIES = ("registry", "conversations", "servers", "idempotency", "api_keys", "traces",
                "evals", "routers", "events", "learning", "learner", "training")
"""What routes are given by name: each is made once, when the app starts, and kept in its
state."""


def _from_state(name: str) -> Provide:
    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def _welcome(settings: Settings, registry: ToolRegistry) -> Welcome | None:
    """A tenant that gets a key over the API gets the builtin tools at once."""
    if not settings.register_builtins:
        return None

    async def welcome(tenant: str) -> None:
        await registry.write(tenant, builtin_specs())

    return welcome


async def _register_builtins(pool: asyncpg.Pool, registry: ToolRegistry) -> None:
    """Every tenant has the builtin tools; a tenant made since the last start (by the CLI, say)
    gets them now, the others find them unchanged."""
    for tenant in await pool.fetch("SELECT id FROM tenants ORDER BY id"):
        await registry.write(tenant["id"], builtin_specs())


async def _models(settings: Settings, http: httpx.AsyncClient) -> dict[str, ChatModel]:
    """The backends by name, each with its context window (asked of its server when not
    configured), asked at once."""
    backends = await asyncio.gather(*(with_context_window(b, http)
                                      for b in model_backends(settings)))
    return {b.name: ModelClient(b, http) for b in backends}


def _report_models(models: dict[str, ChatModel], readiness: Readiness) -> None:
    """A line for each backend that needs the operator: one that is down (its context
    window is then unknown too, for the same reason), or that answered but is set up so that
    the service has to make up for it."""
    for name, model in models.items():
        backend = model.backend
        if readiness.models[name].status == "down":
            log.warning("model backend %r at %s is down (%s): chat routes answer 503 until it "
                        "answers; GET /ready says when", name, redact_url(backend.base_url),
                        readiness.models[name].detail)
            continue
        if backend.text_tool_calls or backend.inline_thinking:
            log.warning("model backend %r: tool calls and thinking are read from its text; "
                        "SGLang does this at the source when started with %s and %s",
                        name, TOOL_CALL_FLAGS, REASONING_FLAGS)
        if backend.context_window is None:
            log.warning("model backend %r: context window unknown (set context_window in "
                        "MODEL_BACKENDS, or MODEL_CONTEXT_WINDOW); requests are not fitted "
                        "to it", name)


def _logging(settings: Settings) -> LoggingConfig:
    """LOG_LEVEL for the root logger (Litestar's default would set it to INFO whatever LOG_LEVEL
    says; Litestar's own logger follows its debug flag), libraries' chatter left out."""
    level = settings.log_level
    return LoggingConfig(
        formatters={"standard": {"format": LOG_FORMAT}},
        root={"handlers": ["queue_listener"], "level": level},
        loggers={name: {"level": chatty_level(level)} for name in CHATTY_LOGGERS},
    )


def _plugins(telemetry: Telemetry) -> list[Any]:
    """HTTP spans for the API itself; streamed chunks make no spans of their own."""
    if telemetry.provider is None:
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    config = OpenTelemetryConfig(tracer_provider=telemetry.provider,
                                 exclude_spans=["receive", "send"],
                                 scope_span_details_extractor=request_span_details)
    return [OpenTelemetryPlugin(config)]


def _middleware(settings: Settings) -> list[Any]:
    """The request's span named by its route first (a refused request is a span too), then
    authentication: the rate limit counts per API key."""
    # OPTIONS and HEAD need a key too: every method of a route is guarded alike.
    auth = DefineMiddleware(KeyAuthentication, exclude=PUBLIC_PATHS, exclude_http_methods=[])
    middleware: list[Any] = [name_by_route, auth]
    if settings.rate_limit_per_minute > 0:
        middleware.append(SharedRateLimit(settings.rate_limit_per_minute, PUBLIC_PATHS))
    return middleware


def _guarded(settings: Settings) -> GuardedTransport:
    """Tools (and MCP servers' URLs) reach public addresses only, unless EGRESS_ALLOWLIST says
    otherwise; the model server, which the operator configured, is reached without this guard."""
    return GuardedTransport(EgressPolicy.parse(settings.egress_allowlist))
