"""The Jinja2 environment for every page (autoescaping on, templates in sidecar/templates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from sidecar import __version__

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
# The sidecar's pages load only their own module scripts (hls.js may start a worker from a blob): anything a stored
# value might smuggle into a page as markup cannot run, on top of autoescaping and textContent-only rendering.
PAGE_POLICY = (
    "script-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
templates.env.globals["version"] = __version__
# The one product name in every page's header: the product, as the editor names it ("MediaMTX Configuration
# Editor"), then what these pages are for.
PRODUCT = "MediaMTX · Stream access"
# Pages reached from the editor's dark UI wear its dark theme; without an editor the browser's preference decides.
EDITOR_THEME = "dark"


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """Render a page with what every layout needs: who is asking, whether a local sign-out exists, the product name,
    and the theme (`data-theme` on <html>: the editor's dark one when an editor is configured, else none)."""
    services = request.app.state.services
    full = {
        "who": getattr(request.state, "principal", None),
        "signout": services.sessions is not None,
        "product": PRODUCT,
        "theme": EDITOR_THEME if services.settings.editor_url else None,
        **context,
    }
    response = templates.TemplateResponse(request, name, full, status_code=status_code)
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    return response
