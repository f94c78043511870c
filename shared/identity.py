"""The caller of a request, from its ``Authorization: Bearer`` token, for every route.

The app's entry module puts a ``tokens.Verifier`` on ``app.state.verifier``; routes ask for
``CurrentCaller``, ``CurrentUser`` or ``CurrentGuest``. A bare guest id (an ``X-Guest-Id``
header, as older clients sent) proves nothing and is refused with its own code.
"""

from typing import Annotated

from fastapi import Depends, Request

from shared.errors import ApiError
from shared.tokens import Caller, InvalidToken, KeysUnavailable, Kind, Verifier

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.headers.get("x-guest-id"):
        raise ApiError(401, "guest_token_required",
                       "a guest id alone proves nothing: send the guest token as a Bearer token",
                       CHALLENGE)
    raise ApiError(401, "missing_token", "send a token as 'Authorization: Bearer <token>'",
                   CHALLENGE)


async def verify(request: Request, token: str, expect: Kind | None = None) -> Caller:
    verifier: Verifier = request.app.state.verifier
    try:
        return await verifier.verify(token, expect)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", f"invalid token: {exc}", CHALLENGE) from None
    except KeysUnavailable:
        raise ApiError(503, "keys_unavailable",
                       "cannot check tokens right now; try again") from None


async def _any_caller(request: Request) -> Caller:
    return await verify(request, _bearer(request))


async def _user(request: Request) -> Caller:
    return await verify(request, _bearer(request), "user")


async def _guest(request: Request) -> Caller:
    return await verify(request, _bearer(request), "guest")


CurrentCaller = Annotated[Caller, Depends(_any_caller)]
CurrentUser = Annotated[Caller, Depends(_user)]
CurrentGuest = Annotated[Caller, Depends(_guest)]
