"""Log lines: one per event, with the migration's fields, and errors logged once."""

import io
import json
import logging

import pytest

from shared import logs


@pytest.fixture
def captured():
    logs.configure("test-process", "DEBUG", "json")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)
    yield stream
    logging.getLogger().handlers[:] = []


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_fields_bound_for_a_migration_appear_on_every_line_inside_the_block(captured):
    log = logging.getLogger("shared.test")
    with logs.bind(migration_id="m-1", correlation_id="c-1"):
        log.info("step recorded", extra={"step": "sandbox"})
    log.info("outside")
    inside, outside = lines(captured)
    assert inside["migration_id"] == "m-1" and inside["correlation_id"] == "c-1"
    assert inside["step"] == "sandbox"
    assert "migration_id" not in outside


def test_the_entry_modules_logger_is_named_after_the_process(captured):
    logging.getLogger("__main__").info("started")
    assert lines(captured)[0]["logger"] == "test-process"


def test_an_error_our_handler_logged_is_not_logged_again_by_uvicorn(captured):
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    logging.getLogger("uvicorn.error").error("something else")
    assert [line["message"] for line in lines(captured)] == ["something else"]
