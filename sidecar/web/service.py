"""Service endpoints: health, readiness, version, auth status and Prometheus metrics."""

from __future__ import annotations

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar import __version__
from sidecar.directory import DirectoryError
from sidecar.errors import Forbidden, Unauthorized
from sidecar.runtime import Services
from sidecar.storage_errors import StorageProblem, keep_reserve, storage_problem, write_problem
from sidecar.web.context import principal, services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _reachable(client: httpx.AsyncClient, url: str) -> str:
    try:
        response = await client.get(url)
    except httpx.HTTPError as error:
        return f"unreachable ({type(error).__name__})"
    return "ok" if response.status_code < 500 else f"unhealthy (HTTP {response.status_code})"


def _store_problem(svc: Services) -> StorageProblem | None:
    """Whether the store can be written now (off the event loop: the probe may wait for another writer). When it
    can, the space reserve `sidecar serve` gave up to start on a full disk is put back."""
    settings = svc.settings
    problem = write_problem(settings.data_dir, settings.database_path)
    if problem is None:
        keep_reserve(settings.data_dir)
    return problem


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    # Ready means able to do the work, and most of it writes (playback tokens, sign-ins, the form, admin changes):
    # a store that can be read but not written is not ready, and says why in the words clients would get.
    try:
        svc.store.ping()
        problem = await anyio.to_thread.run_sync(_store_problem, svc)
        checks["store"] = "ok" if problem is None else f"failed ({problem.public})"
    except Exception as error:  # any storage failure means not ready
        found = storage_problem(error, svc.settings.data_dir, svc.settings.database_path)
        checks["store"] = f"failed ({found.public if found else type(error).__name__})"
    if svc.settings.mode == "local":
        try:
            await svc.directory.ping()
            checks["directory"] = "ok"
        except DirectoryError as error:
            checks["directory"] = f"failed ({error})"
    if svc.settings.authentik_url:
        checks["authentik"] = await _reachable(svc.http, svc.settings.authentik_url.rstrip("/") + "/-/health/ready/")
    if svc.settings.mediamtx_api_url:
        checks["mediamtx"] = await _reachable(svc.http, svc.settings.mediamtx_api_url.rstrip("/") + "/v3/paths/list")
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})


async def auth_status(request: Request) -> Response:
    return JSONResponse({"auth_enabled": True, "mode": services(request).settings.mode})


async def metrics(request: Request) -> Response:
    who = await principal(request)
    if not who.authenticated:
        raise Unauthorized()
    if not who.is_admin:
        raise Forbidden("metrics are for admins and the API key")
    return Response(services(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/version", version),
    Route("/auth/status", auth_status),
    Route("/metrics", metrics),
]
