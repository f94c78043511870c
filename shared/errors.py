"""Errors as JSON with a stable code: ``{"error": {"code", "message", "fields"?}}``.

Every API installs ``install(app)``; a client never sees a stack trace, and bad input is a 4xx.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class FieldProblem(BaseModel):
    field: str
    problem: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldProblem] | None = None


class ErrorBody(BaseModel):
    """Every error answer: a stable ``code`` for programs and a ``message`` for people."""

    error: ErrorDetail


# Documented on every route, so the OpenAPI documents show the error shape clients get.
RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "bad input (a path, a cursor, a name)",
        401: "no token, or one that does not verify",
        403: "the guest was migrated: its token no longer reads or writes",
        404: "no such thing, or not the caller's",
        409: "conflicts with what exists",
        413: "the body is too large",
        422: "the body or a parameter is invalid; fields names which",
    }.items()
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def body(code: str, message: str, **more: object) -> dict:
    return {"error": {"code": code, "message": message, **more}}


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            return JSONResponse(body("invalid_json", "the body is not valid JSON"), 422)
        fields = [
            {
                "field": ".".join(str(part) for part in error["loc"]),
                "problem": error["msg"],
            }
            for error in exc.errors()
        ]
        names = ", ".join(f["field"] for f in fields)
        return JSONResponse(body("invalid_request", f"invalid: {names}", fields=fields), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(body(code, str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"path": request.url.path}, exc_info=exc)
        return JSONResponse(body("internal", "something went wrong on our side"), 500)
