"""Streams for people: the JSON twin of the /streams page and playback tokens for one stream."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.directory import DirectoryError
from sidecar.errors import BadRequest, Forbidden
from sidecar.media_auth import playback_permissions
from sidecar.policy import InvalidPattern, is_glob, normalise_path, validate_pattern
from sidecar.web.context import json_object, require, services


async def playback_token(request: Request) -> Response:
    who = await require(request)
    path = (await json_object(request)).get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest("path must be a stream path", field="path")
    svc = services(request)
    if is_glob(path) and not who.is_admin:
        raise BadRequest("path must be one stream, not a pattern", field="path")
    if is_glob(path):
        try:
            validate_pattern(path)
        except InvalidPattern as error:
            raise BadRequest(str(error), field="path") from error
        permissions = playback_permissions(who, path)
    else:
        if not svc.rules.decide(who, path, "read").allowed:
            # Say nothing about why: the reason would tell a viewer which rule or groups guard the path.
            raise Forbidden("you may not watch this stream")
        permissions = playback_permissions(who, path)
    # Only groups that grant anything here travel in the token (never tak_* and the like).
    groups = svc.roles.granting(who.groups)
    issued = svc.tokens.issue(who.username, permissions, groups, service=who.source == "api_key")
    return JSONResponse({"token": issued.token, "expires_at": issued.expires_at})


async def list_streams(request: Request) -> Response:
    """Live paths the caller may watch: from MediaMTX's API when configured, else from the runOn* webhooks."""
    who = await require(request)
    svc = services(request)
    streams: list[dict[str, object]]
    if svc.mediamtx is not None:
        paths = await svc.mediamtx.list_paths()
        streams = [{"name": p.name, "ready": p.ready, "readers": len(p.readers)} for p in paths]
    else:
        streams = [{"name": s.path, "ready": True, "readers": len(s.readers)} for s in svc.live.ready()]
    readable = set(svc.rules.readable(who, [str(s["name"]) for s in streams]))
    visible = [s for s in streams if s["name"] in readable]
    body: dict[str, object] = {"streams": visible}
    if who.is_admin:
        # Admins also see which rule decides each path and which groups can be toggled on it.
        matcher = svc.rules.matcher()
        for stream in visible:
            normal = normalise_path(str(stream["name"]))
            rule = matcher.match(normal) if normal is not None else None
            stream["rule"] = None if rule is None else {"pattern": rule.pattern, "groups": sorted(rule.groups)}
            stream["exact_rule"] = rule is not None and rule.pattern == normal
        try:
            body["groups"] = [group.name for group in await svc.users.list_groups()]
        except DirectoryError as error:
            # The streams and their rules do not depend on the directory; only the toggles' group list does.
            body["groups_error"] = f"the group list could not be read ({error}); the group toggles may be incomplete"
    return JSONResponse(body)


routes = [
    Route("/api/v1/streams", list_streams, methods=["GET"]),
    Route("/api/v1/streams/token", playback_token, methods=["POST"]),
]
