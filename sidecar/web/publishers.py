"""Publisher credentials over the JSON API (admins): list, create (secret shown once), revoke."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.web.context import json_object, require, services


async def list_publishers(request: Request) -> Response:
    await require(request, admin=True)
    found = services(request).publishers.list()
    return JSONResponse(
        {
            "publishers": [
                {"name": p.name, "pattern": p.pattern, "created_by": p.created_by, "created_at": p.created_at}
                for p in found
            ]
        }
    )


async def create_publisher(request: Request) -> Response:
    who = await require(request, admin=True)
    body = await json_object(request)
    publisher, secret = services(request).publishers.create(body.get("name"), body.get("pattern"), who.username)
    # The only time the secret leaves the sidecar; it is stored as a hash.
    return JSONResponse({"name": publisher.name, "pattern": publisher.pattern, "secret": secret}, status_code=201)


async def revoke_publisher(request: Request) -> Response:
    who = await require(request, admin=True)
    name = request.path_params["name"]
    services(request).publishers.revoke(name, who.username)
    return JSONResponse({"revoked": name})


routes = [
    Route("/api/v1/publishers", list_publishers, methods=["GET"]),
    Route("/api/v1/publishers", create_publisher, methods=["POST"]),
    Route("/api/v1/publishers/{name}", revoke_publisher, methods=["DELETE"]),
]
