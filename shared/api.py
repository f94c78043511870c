"""What every HTTP API shares: JSON errors, health routes, and its lifetime's connections.

Each service's entry module calls ``create_app`` and adds its own routers. ``Resources`` holds
the engine, the session factory and a broker probe, put on ``app.state`` by the lifespan.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import errors, health, logs
from shared.db import make_engine, make_sessionmaker
from shared.publishing import Publisher
from shared.settings import Settings
from shared.topology import Names
from shared.worker import database_answers

log = logging.getLogger(__name__)


FORM_OVERHEAD = 64 * 1024


class BodyLimit:
    """Refuse a request body over its limit with 413, whether declared or streamed.

    JSON bodies are small by nature (``json_max_bytes``): they are read here, up to the limit,
    and handed on whole. A multipart upload may be as large as ``upload_max_bytes`` plus its
    framing; a declared size over that is refused here, and the route that streams the upload
    to disk counts the rest.
    """

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.upload_limit if multipart else self.json_limit
        allowed = limit - FORM_OVERHEAD if multipart else limit
        too_large = JSONResponse(
            errors.body("too_large", f"the body may be at most {allowed} bytes"), 413)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        if multipart:
            await self.app(scope, receive, send)
            return

        chunks, size, more = [], 0, True
        while more:
            event = await receive()
            if event["type"] != "http.request":
                break
            chunks.append(event.get("body", b""))
            size += len(chunks[-1])
            more = event.get("more_body", False)
            if size > limit:
                await too_large(scope, receive, send)
                return
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return whole
            return await receive()

        await self.app(scope, replay, send)


def create_app(
    service: str,
    settings: Settings,
    router: APIRouter,
    prepare: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """An app with its routes, database engine, broker probe, errors and health routes wired.

    The API documents live under the router's prefix, like every route of the service, so
    they are reachable through the gateway too.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url(service), settings.db_pool_size, settings.db_max_overflow
        )
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.broker = Publisher(settings.amqp_url, Names(settings.broker_namespace), 3.0)
        if prepare is not None:
            prepare(app)
        log.info("api started", extra={"service": service})
        try:
            yield
        finally:
            await app.state.broker.close()
            await engine.dispose()
            log.info("api stopped", extra={"service": service})

    app = FastAPI(lifespan=lifespan, redirect_slashes=False,
                  title=f"guest migration: {service}",
                  openapi_url=f"{router.prefix}/openapi.json", docs_url=f"{router.prefix}/docs",
                  redoc_url=None)
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(BodyLimit, json_limit=settings.json_max_bytes,
                       upload_limit=settings.upload_max_bytes + FORM_OVERHEAD)

    async def check() -> dict[str, bool]:
        broker_ok = True
        try:
            await app.state.broker.connect()
        except Exception:
            broker_ok = False
        return {"database": await database_answers(app.state.engine), "broker": broker_ok}

    app.include_router(health.router(check))
    app.include_router(router, responses=errors.RESPONSES)
    return app


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with maker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]


def serve(app: FastAPI, process: str, settings: Settings, port: int) -> None:
    logs.configure(process, settings.log_level, settings.log_format)
    uvicorn.run(app, host=settings.bind_host, port=port, log_config=None,
                proxy_headers=True, timeout_graceful_shutdown=10)
