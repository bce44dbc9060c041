"""A service process killed mid-turn: the turn is marked interrupted, nothing written is lost,
and the conversation goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from planner.engine import TurnEngine
from planner.turn import TurnRequest
from tests.conftest import ADMIN_KEY, AUTH
from tests.loopback import free_port
from tests.scripted_model import ScriptedHang, ScriptedReply, scripted_model

ROOT = Path(__file__).resolve().parents[1]


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient() as client:
        while asyncio.get_running_loop().time() < deadline:
            assert proc.poll() is None, "the service exited during start-up"
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"the service at {url} did not become healthy")


async def test_a_turn_of_a_killed_process_is_marked_interrupted_and_the_next_turn_works(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    async with scripted_model(ScriptedHang(60)) as model:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "MODEL_URL": model.url,
            "PORT": str(port),
            "REGISTER_BUILTINS": "false",
            "TURN_LEASE_S": "1",
            "DATA_DIR": str(tmp_path),
            "HF_HUB_OFFLINE": "1",
            "ADMIN_KEY": ADMIN_KEY,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, proc)
            async with httpx.AsyncClient(base_url=url, timeout=120, headers=AUTH) as client:
                conversation = (await client.post("/v1/conversations", json={})).json()["id"]
                pending = asyncio.create_task(
                    client.post(
                        f"/v1/conversations/{conversation}/turns",
                        json={"message": "remember this", "stream": False},
                    )
                )
                while not model.requests:
                    await asyncio.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                pending.cancel()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        await asyncio.sleep(1.5)  # the dead process' lease on its turn runs out
        app = await start_app(database_url, model_url=model.url, turn_lease_s=1.0)
        detail = (await app.client.get(f"/v1/conversations/{conversation}")).json()
        assert [t["status"] for t in detail["turns"]] == ["interrupted"]
        assert detail["turns"][0]["error"]["type"] == "/problems/turn-interrupted"
        messages = (await app.client.get(f"/v1/conversations/{conversation}/messages")).json()
        assert [(m["role"], m["content"]) for m in messages["messages"]] == [
            ("user", "remember this")
        ]

        model.push(ScriptedReply(content="Still here."))
        response = await app.client.post(
            f"/v1/conversations/{conversation}/turns", json={"message": "are you there?"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["message"]["content"] == "Still here."
        history = [(m["role"], m.get("content")) for m in model.requests[-1]["messages"][1:]]
        assert history == [("user", "remember this"), ("user", "are you there?")]


async def test_a_turn_written_but_never_run_runs_out_of_lease_and_the_conversation_goes_on(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    """A request can fail between writing its turn and running it (the client went away, a
    write after it failed). The replica renews only the leases of turns it is running, so such
    a turn is marked interrupted instead of blocking its conversation for good."""
    async with scripted_model(ScriptedReply(content="Still here.")) as model:
        app = await start_app(database_url, model_url=model.url, turn_lease_s=0.6)
        engine: TurnEngine = app.server.server.config.app.state.conversations.engine
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        stranded = await engine.start_turn("default", conversation, TurnRequest(message="hi"))

        for _ in range(60):
            turns = (await app.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
            if turns[0]["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert [(t["id"], t["status"]) for t in turns] == [(stranded, "interrupted")]
        read = await app.client.get(f"/v1/turns/{stranded}")
        assert read.status_code == 200, read.text
        assert (read.json()["status"], read.json()["error"]) == ("interrupted", {
            "type": "/problems/turn-interrupted", "title": "Turn interrupted", "status": 503,
            "detail": "the process running this turn stopped before it finished; send the "
                      "message again to retry"})
        response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                         json={"message": "are you there?"})
        assert response.status_code == 200, response.text
        assert response.json()["message"]["content"] == "Still here."
