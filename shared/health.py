"""Liveness and readiness: a router for the APIs, and a tiny HTTP server for the workers.

Ready means the process can do its work now: its database answers and its broker connection
(for a worker, its consumer) is up. A worker whose consumer is gone answers 503 on ``/ready``.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[dict[str, bool]]]


def router(check: Check) -> APIRouter:
    routes = APIRouter(tags=["health"])

    @routes.get("/health")
    async def health() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @routes.get("/ready")
    async def ready() -> JSONResponse:
        """Ready: the database and the broker answer."""
        checks = await check()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    return routes


class HealthServer:
    """``GET /health`` and ``GET /ready`` on ``port`` for a process that has no HTTP API."""

    def __init__(self, check: Check, port: int, host: str = "127.0.0.1") -> None:
        self._check = check
        self._port = port
        self._host = host

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            path = request.split(b" ")[1] if request.count(b" ") >= 2 else b""
            if path == b"/health":
                status, answer = 200, {"status": "ok"}
            elif path == b"/ready":
                checks = await self._check()
                status = 200 if all(checks.values()) else 503
                answer = {"status": "ready" if status == 200 else "not ready", "checks": checks}
            else:
                status, answer = 404, {"error": {"code": "not_found", "message": "no such path"}}
            body = json.dumps(answer).encode()
            reason = {200: b"OK", 404: b"Not Found", 503: b"Service Unavailable"}[status]
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (status, reason, len(body), body)
            )
            await writer.drain()
        except (TimeoutError, OSError, IndexError):
            pass
        finally:
            writer.close()

    async def serve(self, stop: asyncio.Event) -> None:
        if not self._port:
            return
        server = await asyncio.start_server(self._answer, self._host, self._port)
        log.debug("health server listening", extra={"port": self._port})
        async with server:
            await stop.wait()
