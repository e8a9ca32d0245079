"""Baseline for the callback benchmark: one `POST /mediamtx/auth` that parses the JSON body and allows."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def auth_callback(request: Request) -> Response:
    json.loads(await request.body())
    return JSONResponse({"allowed": True})


app = Starlette(routes=[Route("/mediamtx/auth", auth_callback, methods=["POST"])])
