"""Stream sources over the JSON API (admins): MediaMTX path configurations, errors from MediaMTX shown plainly."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.web.context import json_object, require, services


async def list_sources(request: Request) -> Response:
    await require(request, admin=True)
    found = await services(request).sources.list()
    body = [
        {"name": s.name, "source": s.source, "source_on_demand": s.source_on_demand, "record": s.record} for s in found
    ]
    return JSONResponse({"sources": body})


async def add_source(request: Request) -> Response:
    who = await require(request, admin=True)
    name = await services(request).sources.add(await json_object(request), who.username)
    return JSONResponse({"name": name}, status_code=201)


async def change_source(request: Request) -> Response:
    who = await require(request, admin=True)
    name = request.path_params["name"]
    await services(request).sources.change(name, await json_object(request), who.username)
    return JSONResponse({"name": name})


async def delete_source(request: Request) -> Response:
    who = await require(request, admin=True)
    name = request.path_params["name"]
    await services(request).sources.delete(name, who.username)
    return JSONResponse({"deleted": name})


routes = [
    Route("/api/v1/sources", list_sources, methods=["GET"]),
    Route("/api/v1/sources", add_source, methods=["POST"]),
    Route("/api/v1/sources/{name:path}", change_source, methods=["PATCH"]),
    Route("/api/v1/sources/{name:path}", delete_source, methods=["DELETE"]),
]
