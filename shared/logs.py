"""Structured logging: one line per event, with the migration's ids on every line about it.

Fields come from two places: ``extra={...}`` on the call, and the context set by
``bind(...)`` while a message or request about a migration is handled. The format is
``key=value`` text for people (``GM_LOG_FORMAT=text``) or one JSON object per line.
"""

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_context", default=None
)

# Fields every record has, and uvicorn's coloured copy of its message: not worth a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "color_message"}


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach fields (migration_id, correlation_id, event_id...) to every line in this block."""
    merged = {**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class _ProcessName(logging.Filter):
    """Names the entry module's logger after the process (``python -m`` calls it __main__)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "__main__":
            record.name = self._process
        return True


class _AlreadyLogged(logging.Filter):
    """uvicorn logs an unhandled error again after our handler logged it with its fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "uvicorn.error"
                    and record.getMessage() == "Exception in ASGI application")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return {**(_context.get() or {}), **extra}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(process: str, level: str = "INFO", fmt: str = "text") -> None:
    """Called once by each process's entry module, never at import time."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ProcessName(process))
    handler.addFilter(_AlreadyLogged())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Every failed connection attempt is also an aiormq error line; our own warning says it once.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
    logging.getLogger(__name__).debug("logging configured", extra={"process_name": process})
