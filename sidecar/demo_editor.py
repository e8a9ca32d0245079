"""A stand-in for the vanilla MediaMTX web editor (same login, page markup and /api/status) for the demo and tests."""

from __future__ import annotations

import argparse
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import uvicorn
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

COOKIE = "session"
NO_STORE = {"Cache-Control": "no-cache, no-store, must-revalidate"}

# The real editor's groups (it has more tabs in each); icons are characters common fonts have, where the real editor
# loads an icon font from a CDN.
SIDEBAR: list[dict[str, Any]] = [
    {"id": "status", "label": "Status", "icon": "◉", "tabs": [("dashboard", "Dashboard"), ("logs", "Live Logs")]},
    {
        "id": "streaming",
        "label": "Streaming",
        "icon": "▣",
        "tabs": [("streams", "Active Streams"), ("recordings", "Recordings")],
    },
    {
        "id": "config",
        "label": "Configuration",
        "icon": "⚙",
        "tabs": [("basic", "Basic Settings"), ("users", "Users & Auth")],
    },
    {
        "id": "system",
        "label": "System",
        "icon": "⚒",
        "tabs": [("service", "Service Control"), ("versions", "Versions")],
    },
    {"id": "admin", "label": "Admin", "icon": "⚑", "tabs": [("webusers", "Web Users"), ("account", "Account")]},
]


def create_app(username: str, password: str) -> Starlette:
    """The editor app, accepting one user; its signing key is new per process, like the real editor's."""
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    signer = URLSafeSerializer(secrets.token_hex(32), salt="demo-editor")
    groups = [{**g, "tabs": [{"name": n, "label": label} for n, label in g["tabs"]]} for g in SIDEBAR]

    def current_user(request: Request) -> str | None:
        try:
            data = signer.loads(request.cookies.get(COOKIE, ""))
        except BadSignature:
            return None
        return data.get("username") if isinstance(data, dict) else None

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, "demo_editor.html", {"page": name, **context}, status_code, NO_STORE)

    async def index(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=302)
        return page(request, "index", username=user, groups=groups)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login")
        form = await request.form()
        given_user, given_password = str(form.get("username", "")), str(form.get("password", ""))
        user_ok = hmac.compare_digest(given_user.encode(), username.encode())
        if not (hmac.compare_digest(given_password.encode(), password.encode()) and user_ok):
            return page(request, "login", status_code=401, error="Invalid username or password")
        response = RedirectResponse("/", status_code=302)
        token = signer.dumps({"username": given_user, "role": "admin"})
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=302)
        response.delete_cookie(COOKIE)
        return response

    async def status(request: Request) -> Response:
        if current_user(request) is None:
            return JSONResponse({"error": "Not logged in"}, status_code=401)
        return JSONResponse({"running": True, "service": "mediamtx", "editor": "demo"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout),
            Route("/api/status", status),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidecar.demo_editor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--username", default=os.environ.get("DEMO_EDITOR_USERNAME", "admin"))
    args = parser.parse_args(argv)
    # The password comes from the environment only, so it never shows in the process list.
    password = os.environ.get("DEMO_EDITOR_PASSWORD", "admin")
    uvicorn.run(create_app(args.username, password), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
