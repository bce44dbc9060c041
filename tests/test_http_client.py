"""The client tools and models are called with: httpx's API over aiohttp, no cookies kept, and
aiohttp's failures reported as httpx's errors."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.loopback import serving
from tools.egress import EgressPolicy, GuardedTransport
from tools.http_client import AiohttpTransport, http_client

Scope = dict[str, Any]


class Server:
    """A raw ASGI app: `/set` sets a cookie, `/echo` answers with the request's headers and
    body, `/stream` sends one chunk and the next only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-type", b"application/json")]
        match scope["path"]:
            case "/set":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*headers, (b"set-cookie", b"session=tenant-a; Path=/")]})
                await send({"type": "http.response.body", "body": b"{}"})
            case "/echo":
                seen = {k.decode(): v.decode() for k, v in scope["headers"]}
                payload = httpx.Response(200, json={"headers": seen, "body": body.decode()})
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": payload.content})
            case "/stream":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": b"data: 1\n\n",
                            "more_body": True})
                await self.release.wait()
                await send({"type": "http.response.body", "body": b"data: 2\n\n"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Server]]:
    app = Server()
    async with serving(app) as running:
        yield running.url, app
        app.release.set()  # a stream left waiting would hold the server's shutdown


async def test_a_cookie_one_server_sets_never_reaches_the_next_call(
    server: tuple[str, Server],
) -> None:
    url, _ = server
    async with http_client() as client:
        assert (await client.post(f"{url}/set")).headers["set-cookie"] == "session=tenant-a; Path=/"
        echoed = (await client.post(f"{url}/echo", content=b'{"a": 1}')).json()
    assert "cookie" not in echoed["headers"]
    assert echoed["body"] == '{"a": 1}'
    assert client.cookies.jar.__len__() == 0


async def test_a_streamed_body_arrives_chunk_by_chunk(server: tuple[str, Server]) -> None:
    url, app = server
    async with http_client() as client, client.stream("GET", f"{url}/stream") as response:
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: 1\n\n"  # before the server sends the rest
        app.release.set()
        assert [c async for c in chunks] == [b"data: 2\n\n"]


async def test_a_refused_connection_is_httpx_connect_error_caused_by_the_refusal() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    async with http_client() as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{port}/")
    cause: BaseException | None = caught.value
    causes = []
    while cause is not None:
        causes.append(type(cause))
        cause = cause.__cause__
    assert ConnectionRefusedError in causes


async def test_a_server_that_hangs_up_without_answering_is_a_remote_protocol_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with http_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{port}/")
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_read_timeout_is_httpx_read_timeout(server: tuple[str, Server]) -> None:
    url, _ = server
    async with http_client() as client, client.stream(
        "GET", f"{url}/stream", timeout=httpx.Timeout(0.2)
    ) as response:
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: 1\n\n"
        with pytest.raises(httpx.ReadTimeout):
            await anext(chunks)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for `localhost` only: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_a_tls_connection_verified_for_one_name_is_not_reused_for_another_on_its_address(
    tmp_path: Path,
) -> None:
    ca, cert, key = _certificates(tmp_path)
    trusted = ssl.create_default_context(cafile=str(ca))
    # Both names are pinned to 127.0.0.1 by the egress guard; the server's certificate is good
    # for `localhost` only.
    guard = GuardedTransport(EgressPolicy.parse("localhost,127.0.0.0/8"),
                             AiohttpTransport(ssl_context=trusted))
    async with serving(Server(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as running, \
            http_client(guard) as client:
        port = running.url.rsplit(":", 1)[1]
        answered = await client.post(f"https://localhost:{port}/echo", content=b"{}")
        assert answered.json()["headers"]["host"] == f"localhost:{port}"
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(f"https://127.0.0.1:{port}/echo", content=b"{}")
    assert "certificate" in str(caught.value).lower()


async def test_the_environments_proxy_is_used_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    target = "http://127.0.0.1:9/v1/models"  # nothing listens there: only the proxy answers
    try:
        async with http_client(trust_env=True) as trusting:
            assert (await trusting.get(target)).json() == {}
        async with http_client() as direct:
            with pytest.raises(httpx.ConnectError):
                await direct.get(target)
    finally:
        listener.close()
        await listener.wait_closed()
    assert seen == [f"GET {target} HTTP/1.1".encode()]
