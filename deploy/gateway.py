"""The development gateway: one origin for the browser, as nginx gives in deployment.

It serves the web page at ``/`` and passes ``/api/v1/<service>/...`` to that service's port,
streaming both ways. ``deploy/nginx.conf`` is the same routing for a real deployment; this
stand-in exists because the development machines have no nginx.
"""

import logging
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from shared import errors
from shared.api import serve
from shared.settings import Settings

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length"}


def build(settings: Settings) -> FastAPI:
    upstreams = {
        "auth": settings.auth_url.rstrip("/"),
        "sessions": f"http://127.0.0.1:{settings.sessions_port}",
        "sandbox": f"http://127.0.0.1:{settings.sandbox_port}",
    }
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
    app = FastAPI(title="guest migration: gateway", docs_url=None, redoc_url=None,
                  openapi_url=None)
    errors.install(app)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.api_route("/api/v1/{service}/{rest:path}",
                   methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    @app.api_route("/api/v1/{service}", methods=["GET", "POST"])
    async def forward(service: str, request: Request, rest: str = ""):
        base = upstreams.get(service)
        if base is None:
            return JSONResponse(errors.body("not_found", "no such service"), 404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = client.build_request(
            request.method, base + request.url.path, params=request.query_params,
            headers=headers, content=request.stream(),
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("upstream unreachable", extra={"service": service, "error": repr(exc)})
            return JSONResponse(errors.body("upstream_unavailable",
                                            f"the {service} service is not answering"), 502)
        kept = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(response.aiter_raw(), response.status_code, kept,
                                 background=BackgroundTask(response.aclose))

    return app


if __name__ == "__main__":
    settings = Settings()
    serve(build(settings), "gateway", settings, settings.gateway_port)
