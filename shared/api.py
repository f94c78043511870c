"""What every HTTP API shares: JSON errors, health routes, and its lifetime's connections.

Each service's entry module calls ``create_app`` and adds its own routers. ``Resources`` holds
the engine, the session factory and a broker probe, put on ``app.state`` by the lifespan.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import errors, health, logs
from shared.db import make_engine, make_sessionmaker
from shared.publishing import Publisher
from shared.settings import Settings
from shared.topology import Names
from shared.worker import database_answers

log = logging.getLogger(__name__)


def create_app(
    service: str,
    settings: Settings,
    prepare: Callable[[FastAPI], None] | None = None,
    **fastapi_options,
) -> FastAPI:
    """An app with its database engine, broker probe, errors and health routes wired."""

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

    app = FastAPI(lifespan=lifespan, **fastapi_options)
    app.state.settings = settings
    errors.install(app)

    async def check() -> dict[str, bool]:
        broker_ok = True
        try:
            await app.state.broker.connect()
        except Exception:
            broker_ok = False
        return {"database": await database_answers(app.state.engine), "broker": broker_ok}

    app.include_router(health.router(check))
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
