"""The `switchboard` command: `serve` runs the service, `tools import FILE` registers tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from app.settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
        "import", help="register tools from a JSON or JSON Lines file (BFCL's format too)"
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--namespace", help="namespace for specs that name none")
    imp.add_argument(
        "--on-duplicate",
        choices=["error", "first", "last"],
        default="error",
        help="when a name appears more than once with different specs (BFCL files repeat names)",
    )
    imp.add_argument("--tenant", default="default")
    imp.set_defaults(run=_import)
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--tenant", default="default", help="created if new")
    create.add_argument("--role", choices=["admin", "developer", "chat", "viewer"], required=True)
    create.add_argument("--name", default="")
    create.set_defaults(run=_create_key)
    return parser


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from tools.errors import ImportFormatError, SpecInvalid, ToolsError
    from tools.importing import deduplicate, read_tool_file

    try:
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


def _with_namespace(item: Any, namespace: str) -> Any:
    if isinstance(item, dict) and "namespace" not in item:
        return {**item, "namespace": namespace}
    return item


async def _write(settings: Settings, tenant: str, items: list[Any]) -> str:
    from tqdm import tqdm

    from app.database import database
    from tools.embed import SentenceTransformerEmbedder
    from tools.registry import ToolRegistry
    from tools.validation import parse_specs

    specs = parse_specs(items)
    embedder = SentenceTransformerEmbedder(
        settings.embedding_model, runtime=settings.embedding_runtime
    )
    async with database(settings.database_url, settings.data_dir) as (_dsn, pool):
        registry = ToolRegistry(pool, embedder)
        with tqdm(total=0, unit="text", desc="embedding", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = await registry.write(tenant, specs, progress=progress)
    return f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged"


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import create_key
    from app.database import database

    async def create() -> str:
        async with database(settings.database_url, settings.data_dir) as (_dsn, pool):
            made = await create_key(pool, args.tenant, args.role, args.name)
        return f"{made.key}\t(id {made.id}, tenant {made.tenant}, role {made.role})"

    print(asyncio.run(create()))
    return 0
