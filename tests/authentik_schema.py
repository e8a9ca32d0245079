"""Authentik's OpenAPI subset as a contract: every request the sidecar sends and every answer it reads, checked."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "shared" / "authentik" / "openapi-subset.json"
API_PREFIX = "/api/v3"


# --- the contract: Authentik's OpenAPI 3.0 subset as JSON Schema --------------------------------------------------


def _json_schema(node: Any) -> Any:
    """One OpenAPI 3.0 schema object as JSON Schema 2020-12: `nullable` becomes a null branch, refs point at $defs."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("nullable", "readOnly", "writeOnly", "deprecated", "example"):
            continue
        if key == "$ref":
            converted[key] = value.replace("#/components/schemas/", "#/$defs/")
        elif key == "properties":
            converted[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("allOf", "oneOf", "anyOf", "items", "additionalProperties", "not"):
            converted[key] = _json_schema(value)
        else:
            converted[key] = value
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


FORMATS = jsonschema.FormatChecker()


def _email(value: object) -> bool:
    # Django's `EmailField(blank=True)`: Authentik sends "" for a user without an address, under `format: email`.
    return not isinstance(value, str) or value == "" or "@" in value


FORMATS.checks("email")(_email)


class Contract:
    """Checks requests and responses against the operations of Authentik's schema subset."""

    # Before the 2024 releases `recovery_email` read its stage from the query string; the client sends both.
    EXTRA_QUERY = {("POST", "/core/users/{id}/recovery_email/"): {"email_stage": {"type": "string", "format": "uuid"}}}

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.defs = {name: _json_schema(schema) for name, schema in document["components"]["schemas"].items()}
        self.operations: list[tuple[re.Pattern[str], str, str, dict[str, Any]]] = []
        for template, item in document["paths"].items():
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
            for method, operation in item.items():
                if method != "parameters":
                    self.operations.append((re.compile(f"^{pattern}$"), method.upper(), template, operation))

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node and not node["$ref"].startswith("#/components/schemas/"):
            found: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                found = found[part]
            node = found
        return node

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        assert path.startswith(API_PREFIX + "/"), f"{path} is outside Authentik's /api/v3"
        endpoint = path.removeprefix(API_PREFIX)
        for pattern, op_method, template, operation in self.operations:
            if op_method == method and pattern.match(endpoint):
                return template, operation
        raise AssertionError(f"Authentik's schema has no operation {method} {endpoint}")

    def validate(self, schema: dict[str, Any], instance: Any) -> None:
        root = {**_json_schema(schema), "$defs": self.defs}
        jsonschema.Draft202012Validator(root, format_checker=FORMATS).validate(instance)

    def check_request(self, request: httpx.Request) -> None:
        template, operation = self.operation(request.method, request.url.path)
        assert request.headers.get("authorization", "").startswith("Bearer "), "Authentik's API wants a bearer token"
        parameters = [self._resolve(param) for param in operation.get("parameters", [])]
        declared = {param["name"]: param["schema"] for param in parameters if param["in"] == "query"}
        declared.update(self.EXTRA_QUERY.get((request.method, template), {}))
        for name, value in request.url.params.multi_items():
            assert name in declared, f"{request.method} {template} takes no query parameter {name!r}"
            self.validate(declared[name], _typed(declared[name], value))
        body = request.content
        if "requestBody" in operation:
            content = operation["requestBody"]["content"]["application/json"]
            if operation["requestBody"].get("required"):
                assert body, f"{request.method} {template} needs a JSON body"
            if body:
                self.validate(content["schema"], json.loads(body))
        else:
            assert not body, f"{request.method} {template} takes no body"

    def check_response(self, request: httpx.Request, status: int, content: bytes) -> None:
        _, operation = self.operation(request.method, request.url.path)
        documented = operation["responses"].get(str(status))
        if documented is None and status == 404:
            # Django REST framework answers an unknown id or page with `{"detail": ...}` on every route.
            documented = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/GenericError"}}}}
        assert documented is not None, f"{request.method} {request.url.path} never answers {status}"
        documented = self._resolve(documented)
        if "content" not in documented:
            assert not content or status >= 400, f"{request.method} {request.url.path} answers {status} without a body"
            return
        self.validate(documented["content"]["application/json"]["schema"], json.loads(content))


def _typed(schema: dict[str, Any], value: str) -> Any:
    if schema.get("type") == "integer" and value.lstrip("-").isdigit():
        return int(value)
    if schema.get("type") == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


@functools.cache
def load_contract() -> Contract:
    return Contract(json.loads(SCHEMA_FILE.read_text()))


class CheckedTransport(httpx.AsyncBaseTransport):
    """Holds every request and every response to the contract, and records the requests."""

    def __init__(self, inner: httpx.AsyncBaseTransport, contract: Contract) -> None:
        self.inner = inner
        self.contract = contract
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        self.contract.check_request(request)
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        self.contract.check_response(request, response.status_code, content)
        return response


def require_contract() -> Contract:
    """The contract, or a skipped test when the schema file is not there."""
    if not SCHEMA_FILE.exists():
        pytest.skip(f"Authentik's OpenAPI subset is not at {SCHEMA_FILE}")
    return load_contract()
