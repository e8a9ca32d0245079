"""The application factory: routes, middleware and a lifespan that owns the services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sidecar.admin_gate import AdminGate
from sidecar.first_admin import never_had_admin
from sidecar.runtime import build_services
from sidecar.settings import Settings
from sidecar.storage_errors import StartupFailure, build_or_explain
from sidecar.web import (
    api,
    auth,
    editor_proxy,
    mediamtx,
    pages,
    publishers,
    request_access,
    service,
    share,
    sources,
    streams,
)
from sidecar.web.callback import MediaMTXCallback
from sidecar.web.errors import EXCEPTION_HANDLERS
from sidecar.web.middleware import BodyLimit, ControlCharacters, SecurityHeaders, Timing

log = logging.getLogger("sidecar")
STATIC_DIR = Path(__file__).resolve().parent / "overlay_static"
MAX_BODY_BYTES = 64 * 1024
# Requests the proxy forwards to the editor (config imports, uploads) may be larger than anything the sidecar takes.
MAX_EDITOR_BODY_BYTES = 64 * 1024 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    freeze_startup_objects: bool = False,
) -> Starlette:
    """The sidecar. `freeze_startup_objects` (for the server process, not for tests that build many apps): once
    started, move everything startup built out of the garbage collector's way, so its full passes, which would
    otherwise walk all of it and stall callbacks for tens of milliseconds, only see what serving creates."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A full disk does not stop the start (the space reserve is given up, reads are served, writes answer 503);
        # a read-only or foreign-owned data dir or a damaged database does, with one log line saying what to fix.
        try:
            services = build_or_explain(
                lambda: build_services(settings, transport=transport), settings.data_dir, settings.database_path
            )
        except StartupFailure as failure:
            app.state.startup_failure = str(failure)  # `sidecar serve` prints it as its one line
            raise
        app.state.services = services
        if services.first_admin is not None and never_had_admin(services.store):
            log.warning(
                "no admin exists yet: run `sidecar bootstrap` (prints a password) or `sidecar bootstrap "
                "--setup-secret` (prints a one-time secret for the sign-in page)"
            )
        background = []
        if services.mailer.configured:
            background.append(asyncio.create_task(services.mailer.run()))
        if services.mediamtx is not None:
            background.append(asyncio.create_task(services.revoker.prune_every(), name="sidecar-session-sweep"))
        if freeze_startup_objects:
            services.warm()
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if freeze_startup_objects:
                gc.unfreeze()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.aclose()

    own_routes: list[BaseRoute] = [
        *mediamtx.routes,
        *service.routes,
        *auth.routes,
        *api.routes,
        *streams.routes,
        *publishers.routes,
        *sources.routes,
        *share.routes,
        *request_access.routes,
        *pages.routes,
        Mount("/overlay", StaticFiles(directory=STATIC_DIR), name="overlay"),
    ]
    proxied = editor_proxy.routes(settings)

    def body_limit(scope: Scope) -> int:
        """The editor's larger limit only for what no route of the sidecar answers, i.e. what the proxy forwards."""
        if not proxied or scope["path"].startswith(editor_proxy.OWN_PATHS):
            return MAX_BODY_BYTES
        if any(route.matches(scope)[0] != Match.NONE for route in own_routes):
            return MAX_BODY_BYTES
        return MAX_EDITOR_BODY_BYTES

    return Starlette(
        routes=[*own_routes, *proxied],  # the proxy last: its catch-all must not shadow the sidecar's own routes
        middleware=[
            Middleware(MediaMTXCallback),  # outermost: MediaMTX calls it for every connection
            Middleware(SecurityHeaders),
            Middleware(ControlCharacters),
            Middleware(BodyLimit, limit=MAX_BODY_BYTES, limit_for=body_limit),
            Middleware(Timing),
            # Innermost: a write's body is read whole before it queues, and its time in the queue is timed.
            Middleware(AdminGate),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
