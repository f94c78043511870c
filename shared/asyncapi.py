"""The events as an AsyncAPI 2.6 document, built from the pydantic schemas.

auth serves it at ``/api/v1/auth/asyncapi.json`` so observers can read every event's shape and
routing key without reading code.
"""

from shared.events import Envelope, EventData
from shared.topology import GROUPS, Names


def document(namespace: str, events: tuple[type[EventData], ...]) -> dict:
    names = Names(namespace)
    consumers = {
        key: [group.name for group in GROUPS.values() if key in group.routing_keys]
        for key in (event.routing_key() for event in events)
    }
    messages = {}
    channels = {}
    for event in events:
        key = event.routing_key()
        messages[event.name] = {
            "name": event.name,
            "title": f"{event.name} v{event.version}",
            "summary": (event.__doc__ or "").strip(),
            "contentType": "application/cloudevents+json",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event.event_type()},
                            "data": event.model_json_schema(),
                        },
                    },
                ]
            },
        }
        channels[key] = {
            "description": f"routing key {key!r} on exchange {names.events!r}; "
            f"consumed by {', '.join(consumers[key]) or 'observers only'}",
            "subscribe": {"message": {"$ref": f"#/components/messages/{event.name}"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {
                "name": names.events, "type": "topic", "durable": True}}},
        }
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Guest migration events",
            "version": "1",
            "description": "Every event is a CloudEvents 1.0 envelope whose subject is the "
            "migration id (the guest id for GuestExpired, which concerns no migration). "
            f"Observers read them all from the stream {names.observers!r}, "
            "which can be replayed from its first offset.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "components": {
            "messages": messages,
            "schemas": {"Envelope": Envelope.model_json_schema()},
        },
    }
