"""The `switchboard` command: `serve` runs the service, `tools import FILE` registers tools
(from specs or an OpenAPI document), `evals ...` imports, reports and compares eval runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from app.errors import SettingsError
from app.evals_cli import add_commands as add_evals_commands
from app.logs import CHATTY_LOGGERS, LOG_FORMAT, chatty_level, quiet_server_start
from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from tools.openapi_import import ImportedTools
    from tools.registry import Progress, ToolRegistry, WriteResult

T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level(settings.log_level))
    result: int = args.run(settings, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the HTTP service (HOST, PORT from the environment)"
    )
    serve.set_defaults(run=_serve)
    tools = commands.add_parser("tools", help="manage the tool registry").add_subparsers(
        required=True, metavar="ACTION"
    )
    imp = tools.add_parser(
        "import",
        help="register tools from a JSON or JSON Lines file (BFCL's format too), or from an "
        "OpenAPI 3.0/3.1 document (JSON or YAML): one tool per operation",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--namespace", help="namespace for specs that name none (OpenAPI: for every tool)"
    )
    imp.add_argument(
        "--base-url", help="OpenAPI: the API's root URL, instead of the document's servers"
    )
    imp.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="OpenAPI: a header sent on every call (an API key); stored write-only",
    )
    imp.add_argument(
        "--on-duplicate",
        choices=["error", "first", "last"],
        default="error",
        help="when a name appears more than once with different specs (BFCL files repeat names)",
    )
    imp.add_argument("--tenant", default="default")
    imp.set_defaults(run=_import)
    add_evals_commands(commands)
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--tenant", default="default", help="created if new")
    create.add_argument("--role", choices=["admin", "developer", "chat", "viewer"], required=True)
    create.add_argument("--name", default="")
    create.set_defaults(run=_create_key)
    secrets = commands.add_parser("secrets", help="stored secrets").add_subparsers(
        required=True, metavar="ACTION")
    rotate = secrets.add_parser(
        "rotate", help="seal every stored secret under SECRET_KEY (after changing it, with the "
                       "old key in SECRET_KEY_PREVIOUS)")
    rotate.set_defaults(run=_rotate_secrets)
    return parser


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import begin_stop, create_app

    app = create_app(settings)
    # At INFO uvicorn logs a line per request (its access log); LOG_LEVEL=WARNING turns it off.
    # On SIGTERM uvicorn stops listening and waits for requests in flight (a streamed turn's
    # among them) up to SHUTDOWN_GRACE_S; the turns it then cancels are handed over.
    # log_config=None: uvicorn's lines go to the app's handler, in the app's one format.
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        log_config=None, timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s)))
    quiet_server_start()
    exit_on = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        begin_stop(app, settings.shutdown_grace_s)
        exit_on(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run()
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from tools.errors import ImportFormatError, SpecInvalid, ToolsError
    from tools.importing import deduplicate, read_tool_file
    from tools.openapi_import import read_openapi_file

    try:
        document = read_openapi_file(args.file)
        if document is not None:
            return _import_openapi(settings, args, document)
        items = deduplicate(read_tool_file(args.file), args.on_duplicate)
        if args.namespace:
            items = [_with_namespace(item, args.namespace) for item in items]
        written = asyncio.run(_write(settings, args.tenant, items))
    except SpecInvalid as exc:
        print(f"{args.file}: nothing imported; {len(exc.errors)} problem(s):", file=sys.stderr)
        for err in exc.errors:
            where = err.pointer.removeprefix(f"/{err.index}") or "/"
            print(f"  item {err.index} at {where}: {err.message}", file=sys.stderr)
        return 1
    except (ImportFormatError, ToolsError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {written}")
    return 0


def _import_openapi(settings: Settings, args: argparse.Namespace, document: Any) -> int:
    """Through the same conversion and write as POST /v1/tools/import/openapi."""
    from tools.openapi import ImportOptions
    from tools.openapi_import import import_openapi
    from tools.spec import DEFAULT_NAMESPACE

    headers = dict(_header(h) for h in args.header)
    options = ImportOptions(namespace=args.namespace or DEFAULT_NAMESPACE,
                            base_url=args.base_url, headers=headers)

    async def write(registry: ToolRegistry, progress: Progress) -> ImportedTools:
        return await import_openapi(registry, args.tenant, document, options,
                                    document_url=args.file.resolve().as_uri(), progress=progress)

    result = asyncio.run(_with_registry(settings, write))
    for skipped in result.skipped:
        print(f"  skipped {skipped.operation} ({skipped.pointer}): {skipped.reason}",
              file=sys.stderr)
    print(f"{args.file}: {len(result.created)} created, {len(result.updated)} updated, "
          f"{len(result.unchanged)} unchanged, {len(result.skipped)} skipped")
    return 0


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"switchboard: --header {text!r}: write it as NAME:VALUE")
    return name.strip(), value.strip()


def _with_namespace(item: Any, namespace: str) -> Any:
    if isinstance(item, dict) and "namespace" not in item:
        return {**item, "namespace": namespace}
    return item


async def _write(settings: Settings, tenant: str, items: list[Any]) -> str:
    from tools.validation import parse_specs

    specs = parse_specs(items)

    async def write(registry: ToolRegistry, progress: Progress) -> WriteResult:
        return await registry.write(tenant, specs, progress=progress)

    result = await _with_registry(settings, write)
    return f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged"


async def _with_registry(
    settings: Settings, write: Callable[[ToolRegistry, Progress], Awaitable[T]]
) -> T:
    """Run `write(registry, progress)` against the configured database, with a progress bar
    for the embedding."""
    from tqdm import tqdm

    from app.database import database
    from app.settings import secret_box
    from tools.embed import SentenceTransformerEmbedder
    from tools.registry import ToolRegistry

    embedder = SentenceTransformerEmbedder(
        settings.embedding_model, runtime=settings.embedding_runtime
    )
    async with database(settings.database_url, settings.data_dir) as (_dsn, pool):
        registry = ToolRegistry(pool, embedder, box=secret_box(settings))
        with tqdm(total=0, unit="text", desc="embedding", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            return await write(registry, progress)


def _rotate_secrets(settings: Settings, _args: argparse.Namespace) -> int:
    from app.database import database
    from app.settings import secret_box
    from tools.reseal import reseal_all

    async def rotate() -> int:
        async with database(settings.database_url, settings.data_dir) as (_dsn, pool), \
                pool.acquire() as conn:
            return await reseal_all(conn, secret_box(settings))

    print(f"{asyncio.run(rotate())} secret values sealed under the current SECRET_KEY")
    return 0


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import ApiKeys
    from app.database import database

    async def create() -> str:
        async with database(settings.database_url, settings.data_dir) as (_dsn, pool):
            made = await ApiKeys(pool).create(args.tenant, args.role, args.name)
        return f"{made.key}\t(id {made.id}, tenant {made.tenant}, role {made.role})"

    print(asyncio.run(create()))
    return 0
