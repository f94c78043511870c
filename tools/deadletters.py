"""The dead-letter queues: see what is there, and send chosen messages back to work.

``python -m tools.deadletters list [--group G]`` shows every dead-lettered message with its
reason, event type, subject (the migration id, or a GuestExpired's guest id) and message id.
It takes each message without acknowledging it and closes the channel after, so the broker
keeps them all: looking never removes anything.

``python -m tools.deadletters replay <message-id>... [--group G]`` publishes the chosen
messages to their group's work queue (with confirms) with their retry count and failure
headers removed, and only then acknowledges them in the dead-letter queue. Unchosen messages
stay where they are. Replaying is for after the cause is fixed; the handlers' inboxes make a
message that had in fact been applied change nothing.

The broker and namespace come from the usual settings (``GM_AMQP_URL``,
``GM_BROKER_NAMESPACE``).
"""

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.settings import Settings
from shared.topology import GROUPS, Names

# Headers that describe one failed life of a message; a replayed message starts a new one.
FAILURE_HEADERS = ("x-retries", "x-last-error", "x-reason", "x-failed-at", "x-queue",
                   "x-death", "x-delivery-count", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                   "x-last-death-queue", "x-last-death-reason")
REASON_WIDTH = 240


@dataclass(frozen=True)
class DeadLetter:
    group: str
    message_id: str
    type: str
    migration_id: str
    reason: str
    failed_at: str
    retries: int


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def describe(group: str, message: AbstractIncomingMessage) -> DeadLetter:
    """What a person needs to decide about one dead letter, from its headers and body."""
    headers = message.headers or {}
    try:
        body = json.loads(message.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = _text(headers.get("x-reason"))
    if not reason:
        # Dead-lettered by the broker itself (the queue's delivery limit), not by a consumer.
        reason = f"broker: {_text(headers.get('x-first-death-reason')) or 'unknown'}"
    return DeadLetter(
        group=group,
        message_id=_text(message.message_id),
        type=_text(message.type or body.get("type")),
        migration_id=_text(body.get("subject")),
        reason=reason,
        failed_at=_text(headers.get("x-failed-at")),
        retries=int(headers.get("x-retries", 0) or 0),
    )


async def _take_all(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Every message in the queue, held unacknowledged (closing the channel returns them)."""
    queue = await channel.get_queue(queue_name, ensure=True)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    return taken


def _groups(group: str | None) -> list[str]:
    if group is not None and group not in GROUPS:
        raise SystemExit(f"no such group {group!r}; groups are {', '.join(GROUPS)}")
    return [group] if group else list(GROUPS)


async def list_dead(amqp_url: str, names: Names, group: str | None = None) -> list[DeadLetter]:
    """Every dead letter of the group (of every group by default), leaving them in place."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        found = []
        for name in _groups(group):
            channel = await connection.channel()
            messages = await _take_all(channel, names.dead_letters(name))
            found.extend(describe(name, message) for message in messages)
            await channel.close()
        return found


async def replay(
    amqp_url: str, names: Names, message_ids: list[str], group: str | None = None
) -> list[str]:
    """Send the chosen dead letters back to their work queues; returns the ids replayed."""
    wanted = set(message_ids)
    replayed: list[str] = []
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        for name in _groups(group):
            channel = await connection.channel(publisher_confirms=True)
            for message in await _take_all(channel, names.dead_letters(name)):
                if _text(message.message_id) not in wanted:
                    continue
                headers = {k: v for k, v in (message.headers or {}).items()
                           if k not in FAILURE_HEADERS}
                headers["x-replayed-at"] = datetime.now(UTC).isoformat()
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body, headers=headers, content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id, correlation_id=message.correlation_id,
                        type=message.type,
                    ),
                    routing_key=names.work(name), mandatory=True, timeout=10,
                )
                await message.ack()
                replayed.append(_text(message.message_id))
            await channel.close()
    return replayed


def table(letters: list[DeadLetter]) -> str:
    if not letters:
        return "no dead letters"
    rows = [("group", "message id", "type", "subject", "retries", "failed at", "reason")]
    # A validation error's reason spans lines; one line per dead letter keeps the table a table.
    rows += [(d.group, d.message_id, d.type, d.migration_id, str(d.retries), d.failed_at,
              " ".join(d.reason.split())[:REASON_WIDTH]) for d in letters]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  " + row[-1]
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deadletters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show dead letters without removing them")
    listing.add_argument("--group", choices=list(GROUPS))
    again = commands.add_parser("replay", help="send chosen dead letters back to work")
    again.add_argument("message_ids", nargs="+", metavar="message-id")
    again.add_argument("--group", choices=list(GROUPS))
    args = parser.parse_args(argv)

    settings = Settings()
    names = Names(settings.broker_namespace)
    try:
        if args.command == "list":
            print(table(asyncio.run(list_dead(settings.amqp_url, names, args.group))))
            return 0
        done = asyncio.run(replay(settings.amqp_url, names, args.message_ids, args.group))
    except aio_pika.exceptions.ChannelNotFoundEntity:
        print(f"no dead-letter queues for namespace {names.namespace!r} on this broker; "
              "`make prepare` declares them")
        return 1
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(f"cannot reach the broker at {settings.amqp_url.split('@')[-1]}: {exc!r}")
        return 1
    for message_id in done:
        print(f"replayed {message_id}")
    missing = sorted(set(args.message_ids) - set(done))
    for message_id in missing:
        print(f"not found in a dead-letter queue: {message_id}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
