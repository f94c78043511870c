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
              "proxy-authorization", "proxy-authenticate", "host"}


def upstream_url(base: str, scope: dict) -> str:
    """The service's URL for this request, with the path exactly as the client encoded it.

    Passing the decoded path on would decode it twice: ``100%2525.txt`` would reach the
    service as ``100%25.txt``, another file. nginx's ``proxy_pass`` without a URI does the same.
    """
    url = base + scope["raw_path"].decode("latin-1")
    if scope.get("query_string"):
        url += "?" + scope["query_string"].decode("latin-1")
    return url


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

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Ready when every service behind it is."""
        checks = {}
        for service, base in upstreams.items():
            try:
                checks[service] = (await client.get(f"{base}/ready")).status_code == 200
            except httpx.HTTPError:
                checks[service] = False
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            200 if ok else 503)

    @app.api_route("/api/v1/{service}/{rest:path}",
                   methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    @app.api_route("/api/v1/{service}", methods=["GET", "POST"])
    async def forward(service: str, request: Request, rest: str = ""):
        base = upstreams.get(service)
        if base is None:
            return JSONResponse(errors.body("not_found", "no such service"), 404)
        try:
            upstream = client.build_request(
                request.method, upstream_url(base, request.scope),
                headers=[(k, v) for k, v in request.headers.items()
                         if k.lower() not in HOP_BY_HOP],
                content=request.stream(),
            )
        except httpx.InvalidURL:
            return JSONResponse(errors.body("invalid_path", "the path is not a valid URL"), 400)
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
