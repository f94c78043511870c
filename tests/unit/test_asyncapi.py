"""The AsyncAPI document observers read instead of our code."""

from shared.asyncapi import document
from shared.events import ALL_EVENTS, Envelope, MigrationCompleted


def test_every_event_is_published_with_its_routing_key_schema_and_consumers():
    doc = document("gm", ALL_EVENTS)
    assert doc["asyncapi"].startswith("2.")
    assert set(doc["channels"]) == {event.routing_key() for event in ALL_EVENTS}
    for event in ALL_EVENTS:
        message = doc["components"]["messages"][event.name]
        data = message["payload"]["allOf"][1]["properties"]
        assert data["type"] == {"const": event.event_type()}
        assert set(event.model_fields) <= set(data["data"]["properties"])
    assert "sessions" in doc["channels"]["UserLoggedIn.v1"]["description"]
    assert "sandbox" in doc["channels"]["UserLoggedIn.v1"]["description"]
    assert "observers only" in doc["channels"]["MigrationCompleted.v1"]["description"]
    for group in ("sessions", "sandbox"):
        assert group in doc["channels"]["GuestExpired.v1"]["description"]
    assert "gm.observers" in doc["info"]["description"]


def test_the_envelope_schema_names_the_cloudevents_attributes():
    schema = document("gm", (MigrationCompleted,))["components"]["schemas"]["Envelope"]
    for attribute in ("specversion", "id", "source", "type", "subject", "time", "data",
                      "correlationid"):
        assert attribute in schema["properties"]
    assert set(Envelope.model_json_schema()["required"]) >= {"source", "type", "subject"}
