"""The HTTP client the service calls tools and models with: httpx's API over aiohttp's I/O, at
about a third of the CPU per request of httpx's own transport (httpcore's pool re-checks every
pooled connection's socket on every request; bench/BENCHMARKS.md, "Parallel tool calls"). It
keeps no cookies: one client calls the tools of every tenant, and a cookie that one tool's
server sets must never reach another call."""

from __future__ import annotations

import contextlib
import http.cookiejar
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx


def http_client(
    transport: httpx.AsyncBaseTransport | None = None, *, trust_env: bool = False
) -> httpx.AsyncClient:
    """A client with no timeout of its own (callers set theirs), no cookie jar, and aiohttp
    underneath unless `transport` is given (it may wrap an AiohttpTransport). `trust_env`: go
    through the proxy that HTTP_PROXY / HTTPS_PROXY name (NO_PROXY respected), as httpx's own
    client does by default; for the servers the operator configured, not for tools, whose
    addresses the egress guard checks and pins."""
    return httpx.AsyncClient(timeout=None, cookies=_NoCookies(),
                             transport=transport or AiohttpTransport(trust_env=trust_env))


class _NoCookies(http.cookiejar.CookieJar):
    """Neither keeps a cookie from a response nor adds one to a request."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over one aiohttp session, made on first use (inside the running loop).
    Redirects are not followed and bodies are not decompressed: httpx does the decoding."""

    def __init__(
        self, *, max_connections: int = 100, keepalive_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None, trust_env: bool = False,
    ) -> None:
        self.max_connections, self.keepalive_s = max_connections, keepalive_s
        self.ssl_context = ssl_context
        """Certificates to trust; None: those httpx's own client trusts (certifi's bundle, or
        SSL_CERT_FILE / SSL_CERT_DIR when set)."""
        self.trust_env = trust_env
        """Use the proxy the environment names (HTTP_PROXY, HTTPS_PROXY, NO_PROXY)."""
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Pooled connections are keyed by the TLS server name too, not only by the address:
            # after the egress guard pins a host name to its address, two names on one address
            # never share a connection verified for one of them.
            connector = aiohttp.TCPConnector(limit=self.max_connections,
                                             keepalive_timeout=self.keepalive_s,
                                             ssl=self.ssl_context or httpx.create_ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                trust_env=self.trust_env,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        with _mapped(request):
            response = await self._client().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                server_hostname=request.extensions.get("sni_hostname"),
                # httpx's pool timeout bounds the wait for a pooled connection, as aiohttp's
                # `connect` does; httpx's write timeout has no aiohttp counterpart.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeouts.get("pool"), sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self.response, self.request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self.request):
            async for chunk in self.response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self.response.release()


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as the httpx errors callers handle, with the original as the cause."""
    try:
        yield
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(f"cannot request {exc}", request=request) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.NetworkError(str(exc) or type(exc).__name__, request=request) from exc
