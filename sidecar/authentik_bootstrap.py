"""`sidecar bootstrap --authentik`: the standard groups in Authentik and, on request, a password-recovery flow.

Safe to run again: every piece is looked up first (by exact name or slug) and only created when missing, so a
second run reads and writes nothing. It only ever creates; it never edits a flow, stage or prompt it finds, and it
sets the default brand's recovery flow only when the brand has none (or `force_brand` asks for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sidecar.authentik import AuthentikClient, AuthentikError, StageKind
from sidecar.bootstrap import STANDARD_GROUPS
from sidecar.first_admin import admin_group
from sidecar.settings import Settings

PREFIX = "sidecar-recovery"
FLOW_SLUG = PREFIX
FLOW_TITLE = "Reset your password"
BINDING_STEP = 10
EMAIL_TEMPLATE = "email/password_reset.html"  # Authentik's built-in recovery email
PASSWORD_PROMPTS: tuple[dict[str, Any], ...] = (
    {
        "name": f"{PREFIX}-password",
        "field_key": "password",
        "label": "New password",
        "type": "password",
        "required": True,
        "placeholder": "New password",
        "order": 0,
    },
    {
        "name": f"{PREFIX}-password-repeat",
        "field_key": "password_repeat",
        "label": "New password (again)",
        "type": "password",
        "required": True,
        "placeholder": "New password (again)",
        "order": 1,
    },
)


class BootstrapConfigError(AuthentikError):
    """The command cannot start: a setting is missing."""


@dataclass(frozen=True)
class _Stage:
    kind: StageKind
    name: str
    body: dict[str, Any]


def recovery_stages(prompt_pks: list[str]) -> list[_Stage]:
    """The recovery flow's stages, in the order they are bound."""
    return [
        _Stage("identification", f"{PREFIX}-identification", {"user_fields": ["username", "email"]}),
        _Stage(
            "email",
            f"{PREFIX}-email",
            {
                "use_global_settings": True,
                "template": EMAIL_TEMPLATE,
                "subject": "Password recovery",
                "activate_user_on_success": True,
            },
        ),
        _Stage("prompt/stages", f"{PREFIX}-password", {"fields": prompt_pks}),
        _Stage("user_write", f"{PREFIX}-user-write", {"user_creation_mode": "never_create"}),
        _Stage("user_login", f"{PREFIX}-user-login", {}),
    ]


def missing_settings(settings: Settings) -> list[str]:
    missing = []
    if not settings.authentik_url:
        missing.append("SIDECAR_AUTHENTIK_URL")
    if settings.authentik_token is None or not settings.authentik_token.get_secret_value():
        missing.append("SIDECAR_AUTHENTIK_TOKEN")
    return missing


def bootstrap_authentik(
    settings: Settings,
    *,
    recovery: bool = False,
    force_brand: bool = False,
    out: Callable[[str], None] = print,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bool:
    """Make sure the groups (and the recovery flow) exist in Authentik; True when anything was created or set."""
    missing = missing_settings(settings)
    if missing:
        raise BootstrapConfigError(f"{' and '.join(missing)} must be set for `sidecar bootstrap --authentik`")
    return asyncio.run(_run(settings, recovery, force_brand, out, transport))


async def _run(
    settings: Settings,
    recovery: bool,
    force_brand: bool,
    out: Callable[[str], None],
    transport: httpx.AsyncBaseTransport | None,
) -> bool:
    assert settings.authentik_url and settings.authentik_token
    async with httpx.AsyncClient(timeout=settings.upstream_timeout, transport=transport) as http:
        client = AuthentikClient(http, settings.authentik_url, settings.authentik_token.get_secret_value())
        changed = await ensure_groups(client, settings, out)
        if recovery:
            changed = await ensure_recovery(client, out, force_brand=force_brand) or changed
    if not changed:
        out("nothing to do: Authentik already bootstrapped")
    return changed


async def ensure_groups(client: AuthentikClient, settings: Settings, out: Callable[[str], None]) -> bool:
    changed = False
    names = [settings.group_prefix + suffix for suffix in STANDARD_GROUPS]
    for name in dict.fromkeys([*names, admin_group(settings)]):
        if await client.get_group(name) is None:
            await client.create_group(name)
            out(f"created group {name}")
            changed = True
        else:
            out(f"group {name} already present")
    return changed


async def ensure_recovery(client: AuthentikClient, out: Callable[[str], None], *, force_brand: bool = False) -> bool:
    """The recovery flow, its stages and prompts, their bindings in order, and the default brand's recovery flow."""
    changed = False
    flow = await client.get_flow(FLOW_SLUG)
    if flow is None:
        flow = await client.create_flow(name=PREFIX, slug=FLOW_SLUG, title=FLOW_TITLE, designation="recovery")
        out(f"created flow {FLOW_SLUG}")
        changed = True
    elif flow.designation != "recovery":
        raise AuthentikError(f"flow {FLOW_SLUG} exists but is not a recovery flow; left as it is")
    else:
        out(f"flow {FLOW_SLUG} already present")

    prompt_pks: list[str] = []
    for prompt_body in PASSWORD_PROMPTS:
        name = str(prompt_body["name"])
        prompt = await client.get_prompt(name)
        if prompt is None:
            prompt = await client.create_prompt(prompt_body)
            out(f"created prompt {name}")
            changed = True
        else:
            out(f"prompt {name} already present")
        prompt_pks.append(prompt.pk)

    stage_pks: list[tuple[str, str]] = []
    for stage in recovery_stages(prompt_pks):
        found = await client.get_stage(stage.kind, stage.name)
        if found is None:
            found = await client.create_stage(stage.kind, {"name": stage.name, **stage.body})
            out(f"created stage {stage.name}")
            changed = True
        else:
            out(f"stage {stage.name} already present")
        stage_pks.append((stage.name, found.pk))

    bound = {binding.stage for binding in await client.list_bindings(flow.pk)}
    for index, (name, pk) in enumerate(stage_pks, start=1):
        if pk in bound:
            out(f"binding of {name} to {FLOW_SLUG} already present")
        else:
            await client.create_binding(flow.pk, pk, index * BINDING_STEP)
            out(f"bound {name} to {FLOW_SLUG} (order {index * BINDING_STEP})")
            changed = True

    return await _ensure_brand(client, flow.pk, out, force_brand=force_brand) or changed


async def _ensure_brand(
    client: AuthentikClient, flow_pk: str, out: Callable[[str], None], *, force_brand: bool
) -> bool:
    brand = next((brand for brand in await client.list_brands() if brand.default), None)
    if brand is None:
        out(f"no default brand: set {FLOW_SLUG} as a brand's recovery flow in Authentik to offer 'Forgot password?'")
        return False
    if brand.flow_recovery == flow_pk:
        out(f"recovery flow of brand {brand.domain} already present")
        return False
    if brand.flow_recovery is not None and not force_brand:
        out(
            f"brand {brand.domain} already has another recovery flow; left as it is "
            f"(--force-brand sets {FLOW_SLUG} instead)"
        )
        return False
    await client.set_brand_recovery_flow(brand.pk, flow_pk)
    out(f"set {FLOW_SLUG} as the recovery flow of brand {brand.domain}")
    return True
