"""Fixtures every test folder shares: servers, one database per service, one broker namespace.

A test session gets databases and a broker namespace of its own (``gmt_<run>``), built by the
real Alembic migrations and the real topology, and removes them when it ends. Tests keep out of
each other's way by using fresh ids, never by sharing rows.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest

from services.auth import keys
from shared import schema, topology
from shared.db import make_engine, make_sessionmaker
from shared.settings import Settings
from shared.tokens import StaticKeys, Verifier, verifier_for
from tests import servers as test_servers

SERVICES = ("auth", "sessions", "sandbox")


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def servers() -> test_servers.Servers:
    try:
        with test_servers.found() as found:
            yield found
    except test_servers.ServersMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def settings(servers, run_id: str, tmp_path_factory) -> Settings:
    root: Path = tmp_path_factory.mktemp("gm")
    return Settings(
        environment="test",
        postgres_url=servers.postgres_url,
        amqp_url=servers.amqp_url,
        database_prefix=f"gmt_{run_id}",
        broker_namespace=f"gmt.{run_id}",
        sandbox_root=root / "sandbox",
        key_dir=root / "keys",
        db_pool_size=5,
        db_max_overflow=5,
    )


@pytest.fixture(scope="session")
async def databases(settings: Settings) -> AsyncIterator[dict[str, str]]:
    urls = {service: settings.database_url(service) for service in SERVICES}
    for service, url in urls.items():
        await schema.create_database(url)
        await asyncio.to_thread(schema.upgrade, service, url)
    yield urls
    for url in urls.values():
        await schema.drop_database(url)


@pytest.fixture(scope="session")
async def broker(settings: Settings) -> AsyncIterator[topology.Names]:
    names = topology.Names(settings.broker_namespace)
    await topology.declare_all(settings.amqp_url, names)
    yield names
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await topology.delete(await connection.channel(), names)


@pytest.fixture
async def sessions_for(databases) -> AsyncIterator[Callable]:
    """``sessions_for("auth")``: a session factory on that service's test database."""
    engines = []

    def make(service: str, pool_size: int = 5, max_overflow: int = 5):
        engine = make_engine(databases[service], pool_size, max_overflow)
        engines.append(engine)
        return make_sessionmaker(engine)

    yield make
    for engine in engines:
        await engine.dispose()


@pytest.fixture(scope="session")
def signing_key(settings: Settings) -> keys.SigningKey:
    return keys.load_or_create(settings.key_dir)


@pytest.fixture(scope="session")
def verifier(settings: Settings, signing_key: keys.SigningKey) -> Verifier:
    return verifier_for(settings, StaticKeys(signing_key.verification_keys()))


@pytest.fixture(scope="session")
def mint(settings: Settings, signing_key: keys.SigningKey) -> Callable[..., str]:
    """``mint("guest", some_uuid)``: a token auth would sign for that caller."""

    def make(kind: str, subject: uuid.UUID, lifetime: timedelta = timedelta(minutes=5)) -> str:
        return keys.mint(signing_key, kind=kind, subject=subject,
                         expires_at=datetime.now(UTC) + lifetime,
                         issuer=settings.token_issuer, audience=settings.token_audience)

    return make
