"""Re-owning a guest with many sessions: seconds for 10k, 50k and 100k sessions of one thread.

``python -m tools.bench_sessions`` (part of ``make bench``). It builds a throwaway database with
the real migrations, fills it with set-based inserts, times the worker's hand-over transaction
(lock, two UPDATEs, the fence, commit) for one guest per size, and drops the database after.
The target: 100,000 sessions in under 2 seconds, growing no worse than linearly.
"""

import asyncio
import logging
import sys
import time
import uuid

from sqlalchemy import text

from services.sessions import ownership
from shared import logs, schema
from shared.db import make_engine, make_sessionmaker
from shared.events import UserLoggedIn
from shared.settings import Settings

log = logging.getLogger("bench_sessions")

SIZES = (10_000, 50_000, 100_000)
TARGET_ROWS = 100_000
TARGET_SECONDS = 2.0

FILL_SESSIONS = text(
    "INSERT INTO sessions (id, owner_guest_id, title, created_at) "
    "SELECT gen_random_uuid(), :guest, 'session ' || n, now() - n * interval '1 millisecond' "
    "FROM generate_series(1, :rows) AS n"
)
FILL_THREADS = text(
    "INSERT INTO threads (id, session_id, owner_guest_id, title) "
    "SELECT gen_random_uuid(), id, owner_guest_id, 'thread' FROM sessions "
    "WHERE owner_guest_id = :guest"
)


async def _fill(sessions, rows: int) -> uuid.UUID:
    guest = uuid.uuid4()
    async with sessions() as session, session.begin():
        await session.execute(FILL_SESSIONS, {"guest": guest, "rows": rows})
        await session.execute(FILL_THREADS, {"guest": guest})
    return guest


async def _time_hand_over(sessions, guest: uuid.UUID) -> tuple[float, ownership.Handover]:
    claim = UserLoggedIn(migration_id=uuid.uuid4(), user_id=uuid.uuid4(), guest_id=guest)
    started = time.perf_counter()
    async with sessions() as session, session.begin():
        handover = await ownership.hand_over(session, claim)
    return time.perf_counter() - started, handover


async def _run(url: str) -> list[tuple[int, float]]:
    engine = make_engine(url, pool_size=2, max_overflow=0)
    sessions = make_sessionmaker(engine)
    results = []
    try:
        for rows in SIZES:
            guest = await _fill(sessions, rows)
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE sessions, threads"))
            seconds, handover = await _time_hand_over(sessions, guest)
            if (handover.sessions, handover.threads) != (rows, rows):
                raise RuntimeError(f"moved {handover} of {rows} sessions and threads")
            results.append((rows, seconds))
            log.info("re-owned", extra={"rows": rows, "seconds": round(seconds, 3)})
    finally:
        await engine.dispose()
    return results


def _table(results: list[tuple[int, float]]) -> str:
    lines = [f"{'sessions':>9} {'threads':>9} {'seconds':>8} {'rows/s':>10} {'s per 10k':>9}"]
    for rows, seconds in results:
        lines.append(f"{rows:>9,} {rows:>9,} {seconds:>8.3f} {2 * rows / seconds:>10,.0f} "
                     f"{seconds / rows * 10_000:>9.3f}")
    largest = dict(results).get(TARGET_ROWS)
    verdict = "yes" if largest is not None and largest < TARGET_SECONDS else "NO"
    lines.append(f"100k sessions re-owned in under {TARGET_SECONDS:g} s: {verdict}")
    return "\n".join(lines) + "\n"


def main() -> None:
    logs.configure("bench-sessions", "WARNING")
    settings = Settings(database_prefix=f"gmbench_{uuid.uuid4().hex[:8]}")
    url = settings.database_url("sessions")
    asyncio.run(schema.create_database(url))
    try:
        schema.upgrade("sessions", url)
        results = asyncio.run(_run(url))
    finally:
        asyncio.run(schema.drop_database(url))
    sys.stdout.write(_table(results))


if __name__ == "__main__":
    main()
