"""The container deployment: compose.yaml against the Compose schema, the MediaMTX configs against MediaMTX 1.20.1's
own schema, the Dockerfile, and the properties a careless edit would break (what is published, whom the sidecar
trusts, which files the mounts point at). No Docker engine is needed."""

from __future__ import annotations

import http.server
import importlib
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT4

from sidecar.processes import MIN_CADDY_VERSION, caddy_binary
from tests.processes_fixtures import child_env

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
COMPOSE_SCHEMA = SHARED / "compose" / "compose-spec.json"
MEDIAMTX_OPENAPI = SHARED / "mediamtx" / "openapi.yaml"  # MediaMTX v1.20.1's own API schema
MEDIAMTX_VERSION = "1.20.1"
HTTP_CONFIG = ROOT / "deploy" / "mediamtx.yml"
JWT_CONFIG = ROOT / "deploy" / "mediamtx-jwt.yml"
MEDIAMTX_CONFIGS = [HTTP_CONFIG, JWT_CONFIG]

CORE_SERVICES = {"caddy", "sidecar", "mediamtx", "editor"}
AUTHENTIK_SERVICES = {"postgresql", "server", "worker"}
# (host port, container port, protocol) each service may publish; every other service publishes nothing.
PUBLISHED = {
    "caddy": {(80, 80, "tcp"), (443, 443, "tcp"), (443, 443, "udp")},
    "mediamtx": {
        (8554, 8554, "tcp"),  # RTSP
        (1935, 1935, "tcp"),  # RTMP
        (8888, 8888, "tcp"),  # HLS
        (8889, 8889, "tcp"),  # WebRTC signalling
        (8189, 8189, "udp"),  # WebRTC media
        (8890, 8890, "udp"),  # SRT
    },
}
INTERNAL_PORTS = {
    9997: "MediaMTX control API",
    8088: "sidecar",
    5000: "editor",
    9000: "Authentik",
    9443: "Authentik",
    5432: "PostgreSQL",
    2019: "Caddy admin API",
}
# MediaMTX listener settings and the protocol each one serves.
LISTENERS = {
    "rtspAddress": "tcp",
    "rtmpAddress": "tcp",
    "hlsAddress": "tcp",
    "webrtcAddress": "tcp",
    "webrtcLocalUDPAddress": "udp",
    "srtAddress": "udp",
}
# hook setting -> (event in the sidecar URL, MTX_<kind>_TYPE/_ID variables MediaMTX gives that hook)
HOOKS = {
    "runOnAvailable": ("ready", "SOURCE"),
    "runOnUnavailable": ("not-ready", "SOURCE"),
    "runOnRead": ("read", "READER"),
    "runOnUnread": ("unread", "READER"),
}
HOSTILE = {
    "MTX_PATH": 'live/cam"1\\x',
    "MTX_QUERY": 'token=a&b="c"\n{{SIDECAR_API_KEY}}',
    "MTX_SOURCE_TYPE": "rtspSession",
    "MTX_SOURCE_ID": "0b9f-\t",
    "MTX_READER_TYPE": "hlsMuxer",
    "MTX_READER_ID": "</script>",
}
REQUIRED_VARIABLE = re.compile(r"\$\{(\w+):?\?([^}]*)\}")
INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?+])([^}]*))?\}|\$(\w+)")


def needs_shared(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared schemas sit beside the repository checkout")
    return path


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of one string, with `env` as the only variables that are set."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        given = env.get(name)
        if operator in (":-", "-"):
            return given if given or (operator == "-" and given is not None) else argument
        if operator in (":?", "?"):
            return given if given else f"<{name}>"
        if operator in (":+", "+"):
            return argument if given else ""
        return given or ""

    return INTERPOLATION.sub(replace, value)


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def environment(service: dict[str, Any]) -> dict[str, Any]:
    found = service.get("environment") or {}
    if isinstance(found, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in found)
    return dict(found)


def published_ports(service: dict[str, Any]) -> set[tuple[int | None, int, str]]:
    """(host port or None for an ephemeral one, container port, protocol) for every `ports` entry."""
    found: set[tuple[int | None, int, str]] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host = entry.get("published")
            found.add((int(host) if host else None, int(entry["target"]), entry.get("protocol", "tcp")))
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        host_port = parts[-2] if len(parts) >= 2 else ""
        found.add((int(host_port) if host_port else None, int(parts[-1]), protocol or "tcp"))
    return found


def bind_mounts(service: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only) for the bind mounts of a service (named volumes left out)."""
    found: dict[str, tuple[Path, bool]] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                found[entry["target"]] = (ROOT / interpolate(entry["source"], env), bool(entry.get("read_only")))
            continue
        source, target, *options = interpolate(str(entry), env).split(":")
        if source.startswith((".", "/")):
            found[target] = (ROOT / source, "ro" in ",".join(options).split(","))
    return found


def host_path_of(container_path: str, mounts: dict[str, tuple[Path, bool]]) -> Path | None:
    for target, (source, _) in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / posixpath.relpath(container_path, target)
    return None


def caddy_imports(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line.split()[1] for line in lines if line.startswith("import ")]


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def dockerfile(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == keyword]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def mediamtx_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(needs_shared(MEDIAMTX_OPENAPI).read_text())
    return loaded


def mediamtx_validator(openapi: dict[str, Any], name: str) -> jsonschema.Draft4Validator:
    """A validator for one of MediaMTX's schema components (OpenAPI 3.0 schemas are close to JSON Schema 4)."""
    registry: Registry[Any] = Registry().with_resource("urn:mediamtx-openapi", DRAFT4.create_resource(openapi))
    return jsonschema.Draft4Validator({"$ref": f"urn:mediamtx-openapi#/components/schemas/{name}"}, registry=registry)


def load_mediamtx(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


# --- compose.yaml: schema and services --------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(needs_shared(COMPOSE_SCHEMA).read_text())
    # Its $schema names draft 7 (spelt https://.../draft-07/schema, which jsonschema's own lookup does not know).
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_core_services_start_without_a_profile_and_authentik_only_with_its_own(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == CORE_SERVICES | AUTHENTIK_SERVICES
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], name
        depends = services[name].get("depends_on", [])
        assert not AUTHENTIK_SERVICES & set(depends), f"{name} must not need the authentik profile"
    for name in AUTHENTIK_SERVICES:
        assert services[name].get("profiles") == ["authentik"], name


# --- what is published -------------------------------------------------------------------------------------------


def test_only_caddy_publishes_web_ports_and_only_mediamtx_publishes_media_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert published_ports(service) == PUBLISHED.get(name, set()), name


@pytest.mark.parametrize("port", sorted(INTERNAL_PORTS), ids=lambda port: f"{port}-{INTERNAL_PORTS[port]}")
def test_internal_port_is_never_published(services: dict[str, dict[str, Any]], port: int) -> None:
    for name, service in services.items():
        for host, container, _ in published_ports(service):
            assert port not in (host, container), f"{name} publishes {port} ({INTERNAL_PORTS[port]})"


def test_no_service_shares_the_hosts_network_or_docker_socket(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        mode = service.get("network_mode")
        assert mode is None or mode.startswith("service:"), f"{name}: network_mode {mode} bypasses `ports`"
        assert not any("docker.sock" in str(volume) for volume in service.get("volumes", [])), name


def test_mediamtx_publishes_exactly_the_listeners_its_config_enables(services: dict[str, dict[str, Any]]) -> None:
    config = load_mediamtx(HTTP_CONFIG)
    listening = {(int(config[key].rsplit(":", 1)[1]), protocol) for key, protocol in LISTENERS.items()}
    assert {(container, protocol) for _, container, protocol in published_ports(services["mediamtx"])} == listening
    for server in ("moq", "metrics", "pprof", "playback"):
        assert config.get(server) is False, f"{server} listens on ports that are not published: turn it off"


# --- whom the sidecar trusts -------------------------------------------------------------------------------------


def test_sidecar_trusts_identity_headers_from_caddys_fixed_address_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    caddy_address = ip_address(services["caddy"]["networks"]["stack"]["ipv4_address"])
    (ipam,) = compose["networks"]["stack"]["ipam"]["config"]
    assert caddy_address in ip_network(ipam["subnet"])
    assert caddy_address != ip_address(ipam["gateway"])
    # Docker hands out addresses from ip_range only, so no other container can be given Caddy's.
    assert caddy_address not in ip_network(ipam["ip_range"])
    for name, service in services.items():
        networks = service.get("networks")
        if name not in ("caddy", "mediamtx") and isinstance(networks, dict):
            assert all(not (n or {}).get("ipv4_address") for n in networks.values()), name

    proxies = environment(services["sidecar"])["SIDECAR_TRUSTED_PROXIES"]
    trusted = [ip_network(item.strip()) for item in proxies.split(",")]
    assert trusted == [ip_network(f"{caddy_address}/32")], "trust Caddy's address alone, never the subnet"


def test_caddy_reaches_the_sidecar_and_the_sidecar_the_editor_where_they_listen(
    services: dict[str, dict[str, Any]],
) -> None:
    caddy_env = environment(services["caddy"])
    sidecar_env = environment(services["sidecar"])
    assert caddy_env["SIDECAR_UPSTREAM"] == f"sidecar:{sidecar_env['SIDECAR_PORT']}"
    assert interpolate(caddy_env["AUTH_UPSTREAM"]) == caddy_env["SIDECAR_UPSTREAM"]
    assert interpolate(caddy_env["AUTH_URI"]) == "/auth/verify"
    assert sidecar_env["SIDECAR_HOST"] == "0.0.0.0"
    # The editor runs in MediaMTX's network namespace, so its name is an alias of the mediamtx service. Only the
    # sidecar's proxy reaches it (admins only, identity removed); Caddy has no route to it.
    assert sidecar_env["SIDECAR_EDITOR_URL"] == "http://editor:5000"
    assert not any("EDITOR" in name for name in caddy_env)
    assert services["editor"]["network_mode"] == "service:mediamtx"
    assert "editor" in services["mediamtx"]["networks"]["stack"]["aliases"]


# --- files the mounts point at -----------------------------------------------------------------------------------


def test_caddy_mounts_the_repos_caddyfile_where_the_image_runs_it_and_every_import_resolves(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = bind_mounts(services["caddy"])
    assert mounts["/etc/caddy/Caddyfile"] == (ROOT / "Caddyfile", True), "the image runs /etc/caddy/Caddyfile"
    for target, (source, read_only) in mounts.items():
        assert source.exists(), f"{target} is mounted from {source}, which does not exist"
        assert read_only, f"{target} should be mounted read-only"
    pending = ["/etc/caddy/Caddyfile"]
    while pending:
        container_file = pending.pop()
        host_file = host_path_of(container_file, mounts)
        assert host_file is not None and host_file.is_file(), f"{container_file} is not mounted"
        for pattern in caddy_imports(host_file):
            # Caddy resolves a relative import against the directory of the file that imports it.
            imported = posixpath.normpath(posixpath.join(posixpath.dirname(container_file), pattern))
            assert host_path_of(imported, mounts) is not None, f"import {pattern} in {container_file} is not mounted"
            pending.append(imported)


@pytest.mark.caddy
@pytest.mark.parametrize(
    ("overrides", "auth_dial"),
    [
        ({}, "sidecar:8088"),
        (
            {
                "SITE_ADDRESS": "video.example.org",
                "AUTH_UPSTREAM": "server:9000",
                "AUTH_URI": "/outpost.goauthentik.io/auth/caddy",
            },
            "server:9000",
        ),
    ],
    ids=["local-mode", "authentik-mode"],
)
def test_caddy_loads_the_config_as_the_container_sees_it(
    services: dict[str, dict[str, Any]], tmp_path: Path, overrides: dict[str, str], auth_dial: str
) -> None:
    root = tmp_path / "container"
    for target, (source, _) in bind_mounts(services["caddy"]).items():
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination)
    values = {key: interpolate(str(value), overrides) for key, value in environment(services["caddy"]).items()}
    env = child_env(**values, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    argv = [str(caddy_binary()), "adapt", "--config", str(root / "etc/caddy/Caddyfile"), "--adapter", "caddyfile"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dials = set(re.findall(r'"dial":\s*"([^"]+)"', done.stdout))
    assert {"sidecar:8088", auth_dial} <= dials
    assert "editor:5000" not in dials, "the editor is reached through the sidecar only"
    if auth_dial.startswith("server:"):
        assert "stack" in services["server"]["networks"], "Caddy must share a network with Authentik's server"


@pytest.mark.parametrize("variable", ["", "mediamtx-jwt.yml"], ids=["default-http", "jwt"])
def test_mediamtx_config_mount_points_at_a_file_in_deploy(services: dict[str, dict[str, Any]], variable: str) -> None:
    mounts = bind_mounts(services["mediamtx"], {"MEDIAMTX_CONFIG": variable} if variable else None)
    assert mounts["/mediamtx.yml"] == (JWT_CONFIG if variable else HTTP_CONFIG, True)


# --- variables and secrets ---------------------------------------------------------------------------------------


def test_every_required_variable_says_what_to_set(compose: dict[str, Any]) -> None:
    required = [match for text in strings_in(compose) for match in REQUIRED_VARIABLE.findall(text)]
    assert required, "SIDECAR_API_KEY at least must be required"
    for name, message in required:
        assert message.strip(), f"${{{name}:?}} needs a message that tells the operator what to set"


def test_profile_services_require_no_variable(services: dict[str, dict[str, Any]]) -> None:
    # Compose interpolates every service before it applies profiles: a ${VAR:?...} in an authentik service would
    # stop `docker compose up` in local mode as well.
    for name, service in services.items():
        if service.get("profiles"):
            found = [m for text in strings_in(service) for m in REQUIRED_VARIABLE.findall(text)]
            assert not found, f"{name} requires {found}; use a compose secret instead"


def test_hooks_and_sidecar_share_one_required_api_key(services: dict[str, dict[str, Any]]) -> None:
    sidecar_key = environment(services["sidecar"])["SIDECAR_API_KEY"]
    assert REQUIRED_VARIABLE.fullmatch(sidecar_key)
    assert environment(services["mediamtx"])["SIDECAR_API_KEY"] == sidecar_key


def test_authentik_secrets_come_from_the_environment_as_compose_secrets(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    secrets = compose["secrets"]
    assert {definition["environment"] for definition in secrets.values()} == {"AUTHENTIK_SECRET_KEY", "PG_PASS"}
    for name in AUTHENTIK_SERVICES:
        service = services[name]
        mounted = set(service.get("secrets", []))
        for value in environment(service).values():
            for secret in re.findall(r"/run/secrets/(\w+)", str(value or "")):
                assert secret in mounted, f"{name} reads {secret} without mounting it"
                assert secret in secrets, secret
    for name in ("server", "worker"):
        env = environment(services[name])
        assert env["AUTHENTIK_SECRET_KEY"] == "file:///run/secrets/authentik_secret_key"
        assert env["AUTHENTIK_POSTGRESQL__PASSWORD"] == "file:///run/secrets/authentik_pg_pass"
        assert env["AUTHENTIK_POSTGRESQL__HOST"] in services
        assert env["AUTHENTIK_POSTGRESQL__USER"] == environment(services["postgresql"])["POSTGRES_USER"]
        assert env["AUTHENTIK_POSTGRESQL__NAME"] == environment(services["postgresql"])["POSTGRES_DB"]
        assert re.fullmatch(r"2026\.5\.\d+", interpolate(services[name]["image"]).rsplit(":", 1)[1])
    assert environment(services["postgresql"])["POSTGRES_PASSWORD_FILE"] == "/run/secrets/authentik_pg_pass"


# --- images ------------------------------------------------------------------------------------------------------


def test_caddy_image_is_pinned_to_a_release_that_strips_identity_headers(services: dict[str, dict[str, Any]]) -> None:
    image = services["caddy"]["image"]
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?caddy:(\d+)\.(\d+)\.(\d+)(?:-[a-z0-9.]+)?", image)
    assert match, f"pin Caddy to a full x.y.z release, not {image!r}"
    assert tuple(int(part) for part in match.groups()) >= MIN_CADDY_VERSION


def test_mediamtx_image_is_the_pinned_release_with_curl_for_its_hooks(services: dict[str, dict[str, Any]]) -> None:
    inline = services["mediamtx"]["build"]["dockerfile_inline"]
    bases = re.findall(r"^FROM\s+(\S+)", inline, flags=re.MULTILINE)
    assert bases == [f"bluenviron/mediamtx:{MEDIAMTX_VERSION}-ffmpeg"], "the -ffmpeg variant has a package manager"
    assert re.search(r"apk add\b.*\bcurl\b", inline)


# --- MediaMTX configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MEDIAMTX_CONFIGS, ids=lambda path: path.name)
def test_mediamtx_config_uses_only_settings_that_mediamtx_knows(mediamtx_schema: dict[str, Any], path: Path) -> None:
    # MediaMTX refuses to start on an unknown key ("json: unknown field"), so a misspelling must fail here.
    schemas = mediamtx_schema["components"]["schemas"]
    global_keys, path_keys = schemas["GlobalConf"]["properties"], schemas["PathConf"]["properties"]
    config = load_mediamtx(path)
    unknown = sorted(set(config) - set(global_keys) - {"pathDefaults", "paths"})
    unknown += sorted(f"pathDefaults.{key}" for key in set(config.get("pathDefaults") or {}) - set(path_keys))
    for name, settings in (config.get("paths") or {}).items():
        unknown += sorted(f"paths.{name}.{key}" for key in set(settings or {}) - set(path_keys))
    assert not unknown, f"not MediaMTX {MEDIAMTX_VERSION} settings: {unknown}"
    deprecated = [key for key in config if global_keys.get(key, {}).get("deprecated")]
    deprecated += [key for key in config.get("pathDefaults") or {} if path_keys[key].get("deprecated")]
    assert not deprecated, f"deprecated in MediaMTX {MEDIAMTX_VERSION}: {deprecated}"


@pytest.mark.parametrize("path", MEDIAMTX_CONFIGS, ids=lambda path: path.name)
def test_mediamtx_config_values_have_the_types_mediamtx_expects(mediamtx_schema: dict[str, Any], path: Path) -> None:
    config = load_mediamtx(path)
    documents = [("GlobalConf", {k: v for k, v in config.items() if k not in ("pathDefaults", "paths")})]
    documents.append(("PathConf", config.get("pathDefaults") or {}))
    documents += [("PathConf", settings or {}) for settings in (config.get("paths") or {}).values()]
    for component, document in documents:
        errors = list(mediamtx_validator(mediamtx_schema, component).iter_errors(document))
        assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_http_mode_asks_the_sidecar_about_everything() -> None:
    config = load_mediamtx(HTTP_CONFIG)
    assert config["authMethod"] == "http"
    assert config["authHTTPAddress"] == "http://sidecar:8088/mediamtx/auth"
    assert config["authHTTPExclude"] == [], "nothing may bypass the sidecar, not even api or metrics"
    assert config["api"] is True
    assert config["apiAddress"] == ":9997"


def test_sidecar_reaches_the_control_api_where_mediamtx_listens(services: dict[str, dict[str, Any]]) -> None:
    port = load_mediamtx(HTTP_CONFIG)["apiAddress"].rsplit(":", 1)[1]
    assert environment(services["sidecar"])["SIDECAR_MEDIAMTX_API_URL"] == f"http://mediamtx:{port}"


def test_jwt_mode_trusts_the_sidecars_keys_and_claim() -> None:
    config = load_mediamtx(JWT_CONFIG)
    assert config["authMethod"] == "jwt"
    assert config["authJWTClaimKey"] == "mediamtx_permissions"
    jwks = urlsplit(config["authJWTJWKS"])
    assert (jwks.scheme, jwks.netloc) == ("http", "sidecar:8088")
    assert jwks.path.endswith("/.well-known/jwks.json")
    assert config["authJWTIssuer"] and config["authJWTAudience"], "iss and aud are only checked when set"
    assert config["authJWTExclude"] == []
    # Tokens in HLS/WebRTC URLs leak into logs and Referer headers; MediaMTX deprecated the switch in 1.18.
    assert not config.get("authJWTInHTTPQuery")


def test_http_and_jwt_configs_differ_only_in_authentication() -> None:
    def without_auth(config: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in config.items() if not key.startswith("auth")}

    assert without_auth(load_mediamtx(HTTP_CONFIG)) == without_auth(load_mediamtx(JWT_CONFIG))


def hook_argv(config: dict[str, Any], hook: str) -> list[str]:
    # MediaMTX splits a hook command like a shell would, then runs it directly.
    return shlex.split(config["pathDefaults"][hook])


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[index + 1] for index, item in enumerate(argv) if item == option]


@pytest.mark.parametrize("hook", sorted(HOOKS))
@pytest.mark.parametrize("path", MEDIAMTX_CONFIGS, ids=lambda path: path.name)
def test_hook_posts_the_path_and_query_to_the_sidecar_with_the_api_key(path: Path, hook: str) -> None:
    event, kind = HOOKS[hook]
    argv = hook_argv(load_mediamtx(path), hook)
    assert argv[0] == "curl" and "-fsS" in argv
    assert argv[-1] == f"http://sidecar:8088/mediamtx/hooks/{event}"
    assert option_values(argv, "--expand-header") == ["X-API-Key: {{SIDECAR_API_KEY}}"]
    # MediaMTX expands $VARIABLES in the arguments: there must be none, so no value (and no key) is spliced into
    # the command line; curl imports them from its environment instead.
    assert not any("$" in item for item in argv)
    imported = {item.lstrip("%").split("=", 1)[0] for item in option_values(argv, "--variable")}
    (template,) = option_values(argv, "--expand-json")
    used = set(re.findall(r"\{\{(\w+):json\}\}", template))
    assert used == {"MTX_PATH", "MTX_QUERY", f"MTX_{kind}_TYPE", f"MTX_{kind}_ID"}
    assert used | {"SIDECAR_API_KEY"} == imported
    # With curl's JSON escaping, hostile values stay inside their strings.
    body = json.loads(re.sub(r"\{\{(\w+):json\}\}", lambda m: json.dumps(HOSTILE[m.group(1)])[1:-1], template))
    assert body["path"] == HOSTILE["MTX_PATH"] and body["query"] == HOSTILE["MTX_QUERY"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append((self.path, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _curl_has_variables() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    done = subprocess.run([curl, "--help", "all"], capture_output=True, text=True, timeout=30)
    return "--variable" in done.stdout


@pytest.mark.skipif(not _curl_has_variables(), reason="needs curl >= 8.3 (--variable); this machine's curl is older")
def test_hook_command_sends_escaped_json_when_run_by_real_curl() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        argv = hook_argv(load_mediamtx(HTTP_CONFIG), "runOnRead")
        argv[-1] = argv[-1].replace("sidecar:8088", f"127.0.0.1:{server.server_address[1]}")
        env = {"PATH": "/usr/bin:/bin", "SIDECAR_API_KEY": "k" * 32, **HOSTILE}
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    ((path, headers, body),) = _Recorder.seen
    assert path == "/mediamtx/hooks/read"
    assert headers["X-API-Key"] == "k" * 32
    sent = json.loads(body)
    assert (sent["path"], sent["query"], sent["reader_id"]) == (
        HOSTILE["MTX_PATH"],
        HOSTILE["MTX_QUERY"],
        HOSTILE["MTX_READER_ID"],
    )


# --- the sidecar image -------------------------------------------------------------------------------------------


def test_dockerfile_builds_the_package_on_python_3_11_slim() -> None:
    assert dockerfile("FROM")[-1] == "python:3.11-slim"  # the final stage is what runs
    assert any("pip install --no-cache-dir ." in run for run in dockerfile("RUN"))


def test_dockerfile_bundles_hls_js_from_the_lock_file_at_build_time() -> None:
    assert any(stage.endswith(" AS player") for stage in dockerfile("FROM")[:-1])
    assert any("npm ci" in run for run in dockerfile("RUN"))
    copies = dockerfile("COPY")
    assert "package.json package-lock.json ./" in copies
    assert any(c.startswith("--from=player") and "overlay_static/vendor/hls.min.js" in c for c in copies)


def test_dockerfile_runs_as_an_unprivileged_user() -> None:
    user = dockerfile("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), "the sidecar must not run as root"
    assert any(re.search(rf"useradd\b.*\b{user}\b", run) for run in dockerfile("RUN")), f"{user} is never created"
    assert any(re.search(rf"install -d -o {user}\b.*\s/data\b", run) for run in dockerfile("RUN"))


def test_dockerfile_serves_on_all_interfaces_with_data_in_the_volume() -> None:
    env = " ".join(dockerfile("ENV"))
    assert "SIDECAR_HOST=0.0.0.0" in env and "SIDECAR_DATA_DIR=/data" in env
    assert json.loads(dockerfile("VOLUME")[0]) == ["/data"]
    assert json.loads(dockerfile("ENTRYPOINT")[0]) == ["sidecar"]
    assert json.loads(dockerfile("CMD")[0]) == ["serve"]


def healthcheck_argv() -> list[str]:
    (healthcheck,) = dockerfile("HEALTHCHECK")
    argv: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return argv


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)], ids=["ok", "503", "down"])
def test_dockerfile_healthcheck_passes_only_when_healthz_answers_ok(status: int | None, healthy: bool) -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"], "the slim image has no curl"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Health", (_Health,), {"status": status}))
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    if status is not None:
        thread.start()
    else:
        server.server_close()  # a port nothing listens on
    try:
        env = {"PATH": "/usr/bin:/bin", "SIDECAR_PORT": str(port)}
        done = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (done.returncode == 0) is healthy, done.stderr


def test_image_entrypoint_is_the_packages_sidecar_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(dockerfile("ENTRYPOINT")[0])[0]
    module, _, function = scripts[entrypoint].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", "data", ".git", ".pytest_cache", ".hypothesis"} <= ignored


def test_only_mediamtxs_fixed_address_may_call_the_auth_callback(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mediamtx_address = ip_address(services["mediamtx"]["networks"]["stack"]["ipv4_address"])
    (ipam,) = compose["networks"]["stack"]["ipam"]["config"]
    assert mediamtx_address in ip_network(ipam["subnet"])
    assert mediamtx_address not in ip_network(ipam["ip_range"])
    assert mediamtx_address != ip_address(services["caddy"]["networks"]["stack"]["ipv4_address"])
    allowed = environment(services["sidecar"])["SIDECAR_MEDIAMTX_ALLOWED_IPS"]
    assert [ip_network(item.strip()) for item in allowed.split(",")] == [ip_network(f"{mediamtx_address}/32")]
    local_api = environment(services["sidecar"])["SIDECAR_MEDIAMTX_LOCAL_API_IPS"]
    assert all(ip_network(item.strip()).is_loopback for item in local_api.split(","))
