"""The application factory: routes, middleware and a lifespan that owns the services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from sidecar.runtime import build_services
from sidecar.settings import Settings
from sidecar.web import api, auth, editor_proxy, mediamtx, pages, publishers, service, share, sources, streams
from sidecar.web.errors import EXCEPTION_HANDLERS
from sidecar.web.middleware import BodyLimit, Timing

log = logging.getLogger("sidecar")
STATIC_DIR = Path(__file__).resolve().parent / "overlay_static"
MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = build_services(settings, transport=transport)
        app.state.services = services
        if services.sessions is not None and services.sessions.first_admin_open(settings.admin_groups):
            log.warning("no admin exists yet: open /auth/login to set the first admin password, or run bootstrap")
        try:
            yield
        finally:
            await services.aclose()

    routes = [
        *mediamtx.routes,  # first: MediaMTX calls these for every connection
        *service.routes,
        *auth.routes,
        *api.routes,
        *streams.routes,
        *publishers.routes,
        *sources.routes,
        *share.routes,
        *pages.routes,
        Mount("/overlay", StaticFiles(directory=STATIC_DIR), name="overlay"),
        *editor_proxy.routes(settings),  # last: its catch-all must not shadow the sidecar's own routes
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimit, limit=MAX_BODY_BYTES), Middleware(Timing)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
