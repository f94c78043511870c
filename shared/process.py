"""Running a long-lived process until SIGTERM or SIGINT, then stopping within a bounded time."""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[None]], grace_seconds: float = 20.0
) -> None:
    """Run ``serve(stop)``; the first signal sets ``stop``, the deadline or a second one cancels."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(serve(stop))

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal, cancelling", extra={"signal": signum})
            task.cancel()
            return
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()
        loop.call_later(grace_seconds, task.cancel)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        log.warning("stopped at the deadline with work unfinished; it will be redelivered")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
