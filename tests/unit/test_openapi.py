"""The published API documents: every route shows the error shape clients actually get."""

import pytest

from services.auth.api import build as build_auth
from services.sandbox.api import build as build_sandbox
from services.sessions.api import build as build_sessions
from shared.settings import Settings


@pytest.mark.parametrize("build", [build_auth, build_sessions, build_sandbox])
def test_every_route_documents_the_json_error_shape(build):
    document = build(Settings()).openapi()
    for path, operations in document["paths"].items():
        if path in ("/health", "/ready"):
            continue
        for method, operation in operations.items():
            error = operation["responses"].get("401") or operation["responses"].get("422")
            assert error is not None, f"{method} {path}"
            schema = error["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{method} {path}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_migrate_guest_takes_its_token_in_the_body_never_the_query():
    operation = build_auth(Settings()).openapi()["paths"]["/api/v1/auth/migrate-guest"]["post"]
    assert all(parameter["in"] != "query" for parameter in operation.get("parameters", []))
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/GuestClaim")
