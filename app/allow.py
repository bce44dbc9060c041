"""The `Allow` header of OPTIONS answers, naming every method of the path.

Litestar 2 makes a path's OPTIONS handler when the path's first handler is registered, and the
handler keeps naming that first route's methods only: a path served by several handlers
(GET and POST on /v1/tools) answered `Allow: OPTIONS, POST` (litestar#4169, fixed in Litestar
3). The answer is corrected as it is sent, from the routes the app ended up with.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope


class AllowHeaders:
    def __init__(self) -> None:
        self._by_handler: dict[int, bytes] = {}

    def learn(self, app: Litestar) -> None:
        """Record each OPTIONS handler's path's methods, once the app's routes are built."""
        for route in app.routes:
            if isinstance(route, HTTPRoute):
                allow = ", ".join(sorted(route.methods)).encode()
                for handler in route.route_handlers:
                    if "OPTIONS" in handler.http_methods:
                        self._by_handler[id(handler)] = allow

    async def before_send(self, message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
            return
        allow = self._by_handler.get(id(scope.get("route_handler")))
        if allow is not None:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
            message["headers"] = [*headers, (b"allow", allow)]
