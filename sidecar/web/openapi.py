"""The OpenAPI document of /api/v1/ (a test keeps it in step with the routes)."""

from __future__ import annotations

from typing import Any

from sidecar import __version__

ERROR = {"$ref": "#/components/schemas/Error"}


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    params: tuple[str, ...] = (),
    path_params: tuple[str, ...] = (),
    auth: str = "admin",
    ok: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Requires: {auth}. State changes from browsers need X-CSRF-Token and a same-origin Origin.",
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in params
        ]
        + [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_params],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok or {"type": "object"}}}},
            "400": {"description": "Bad input; `field` names it", "content": {"application/json": {"schema": ERROR}}},
            "401": {"description": "Unauthorized", "content": {"application/json": {"schema": ERROR}}},
            "403": {"description": "Forbidden", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _created(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation, answering 201 Created instead of 200."""
    responses = operation["responses"]
    operation["responses"] = {"201": {**responses.pop("200"), "description": "Created"}, **responses}
    return operation


RULE = {
    "type": "object",
    "required": ["pattern", "groups"],
    "properties": {"pattern": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}}},
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "MediaMTX access sidecar API", "version": __version__},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                }
            },
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/api/v1/me": {
                "get": _op(
                    "The signed-in principal: username, role, prefixed groups, CSRF token", auth="any user with a group"
                )
            },
            "/api/v1/rules": {
                "get": _op("List path rules"),
                "put": _op("Create or replace a path rule", body=RULE, ok=RULE),
                "delete": _op("Delete the rule for ?pattern=", params=("pattern",)),
            },
            "/api/v1/explain": {
                "get": _op(
                    "Decide ?action= on ?path= for ?user= (or a ?groups=a|b preview) and say why",
                    params=("user", "groups", "path", "action"),
                )
            },
            "/api/v1/users": {
                "get": _op(
                    "Users with their prefixed groups; `account_actions` says whether the caller may activate, "
                    "deactivate or send recovery to that person (else `account_note` says why not)",
                    params=("search", "page", "page_size"),
                )
            },
            "/api/v1/users/{username}": {
                "patch": _op(
                    "Activate or deactivate a user (deactivation kicks their live sessions; 403 for directory "
                    "administrators and, unless the caller administers the directory, for people also in groups "
                    "outside the prefix; 409 for the last active admin)",
                    body={
                        "type": "object",
                        "required": ["is_active"],
                        "properties": {"is_active": {"type": "boolean"}},
                    },
                    path_params=("username",),
                )
            },
            "/api/v1/users/{username}/groups/{group}": {
                "put": _op("Add the user to a prefixed group", path_params=("username", "group")),
                "post": _op("Same as PUT (add), for clients that cannot send PUT", path_params=("username", "group")),
                "delete": _op(
                    "Remove the user from a prefixed group (kicks sessions that lose access)",
                    path_params=("username", "group"),
                ),
            },
            "/api/v1/groups": {
                "get": _op("Groups with the configured prefix and their member counts"),
                "post": _op(
                    "Create a group (name must start with the prefix)",
                    body={"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                ),
            },
            "/api/v1/streams": {
                "get": _op(
                    "Live streams the caller may watch (nothing about the others); for admins also each stream's rule "
                    "and the groups to choose from (`groups_error` instead when the directory cannot list them)",
                    auth="any user with a group",
                )
            },
            "/api/v1/sources": {
                "get": _op("MediaMTX path configurations (stream sources)"),
                "post": _op(
                    "Add a path with a source (rtsp://, rtmp://, http(s)://, srt://, whep(s)://, or publisher)",
                    body={
                        "type": "object",
                        "required": ["name", "source"],
                        "properties": {
                            "name": {"type": "string"},
                            "source": {"type": "string"},
                            "source_on_demand": {"type": "boolean"},
                        },
                    },
                ),
            },
            "/api/v1/sources/{name}": {
                "patch": _op("Change a path's source or sourceOnDemand", path_params=("name",)),
                "delete": _op("Remove a path configuration", path_params=("name",)),
            },
            "/api/v1/users/{username}/recovery-link": {
                "post": _op(
                    "A one-time link that lets the user set a new password (authentik mode; 400 in local mode)",
                    path_params=("username",),
                    ok={"type": "object", "required": ["link"], "properties": {"link": {"type": "string"}}},
                )
            },
            "/api/v1/users/{username}/recovery-email": {
                "post": _op(
                    "Have Authentik email the user a password-reset link (authentik mode; 400 in local mode); "
                    "email_stage defaults to SIDECAR_AUTHENTIK_RECOVERY_EMAIL_STAGE when that is set",
                    body={"type": "object", "properties": {"email_stage": {"type": "string"}}},
                    path_params=("username",),
                    ok={"type": "object", "required": ["sent"], "properties": {"sent": {"type": "boolean"}}},
                )
            },
            "/api/v1/audit": {
                "get": _op(
                    "Audit events, newest first; action, actor and target are exact-match filters",
                    params=("action", "actor", "target", "limit"),
                )
            },
            "/api/v1/pending-work": {
                "get": _op(
                    "What waits to be done (kicks MediaMTX has not confirmed, mail not sent, session records not "
                    "written), one sentence each with since when and the latest error; empty when nothing waits",
                    ok={
                        "type": "object",
                        "properties": {"pending": {"type": "array", "items": {"type": "string"}}},
                    },
                )
            },
            "/api/v1/streams/token": {
                "post": _op(
                    "A playback token (ES256 JWT in MediaMTX's permission format) for one stream you may watch",
                    body={"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}},
                    ok={
                        "type": "object",
                        "properties": {"token": {"type": "string"}, "expires_at": {"type": "integer"}},
                    },
                    auth="any user with a group",
                )
            },
            "/api/v1/publishers": {
                "get": _op("Publisher credentials (names and patterns; never secrets)"),
                "post": _op(
                    "Create a publisher credential; the response holds its secret, shown this once",
                    body={
                        "type": "object",
                        "required": ["name", "pattern"],
                        "properties": {"name": {"type": "string"}, "pattern": {"type": "string"}},
                    },
                ),
            },
            "/api/v1/publishers/{name}": {"delete": _op("Revoke a publisher credential", path_params=("name",))},
            "/api/v1/share-links": {
                "get": _op(
                    "Share links (all for admins, a viewer's own for viewers; never their secrets)",
                    auth="any user with a group",
                ),
                "post": _created(
                    _op(
                        "Create a link that plays one stream you may watch without signing in; the response holds "
                        "its URL, shown this once (viewers need SIDECAR_VIEWER_SHARE_LINKS)",
                        body={
                            "type": "object",
                            "required": ["path", "ttl"],
                            "properties": {
                                "path": {"type": "string"},
                                "ttl": {"type": "string", "enum": ["1h", "4h", "24h", "never"]},
                            },
                        },
                        auth="an admin, or a viewer when viewer share links are on",
                    )
                ),
            },
            "/api/v1/share-links/{id}": {
                "delete": _op(
                    "Revoke a share link: no new tokens, issued tokens stop working, its viewers are kicked",
                    path_params=("id",),
                    auth="an admin, or the viewer who created the link",
                )
            },
            "/api/v1/access-requests": {
                "get": _op("Access requests from the public form, pending first, with their status")
            },
            "/api/v1/access-requests/{id}/approve": {
                "post": _op(
                    "Approve once: create the user, active, in exactly these prefixed groups, and send a set-password "
                    "link (local mode) or Authentik's recovery link; the link is in the answer when no email is sent",
                    body={
                        "type": "object",
                        "required": ["groups"],
                        "properties": {"groups": {"type": "array", "items": {"type": "string"}}},
                    },
                    path_params=("id",),
                )
            },
            "/api/v1/access-requests/{id}/reject": {
                "post": _op(
                    "Reject a pending request; the optional message is emailed to the requester",
                    body={"type": "object", "properties": {"message": {"type": "string"}}},
                    path_params=("id",),
                )
            },
            "/api/v1/openapi.json": {"get": _op("This document", auth="nothing")},
        },
    }
