"""Wiring of the services from settings, shared by the web app's lifespan and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from sidecar.access_requests import AccessRequests
from sidecar.authentik import AuthentikClient
from sidecar.directory import Directory, DirectoryError, Group, User, UserPage
from sidecar.directory.authentik import AuthentikDirectory
from sidecar.directory.local import LocalDirectory
from sidecar.first_admin import FirstAdmin
from sidecar.group_lookup import GroupLookup
from sidecar.identity import RolePolicy, TrustedProxies
from sidecar.keys import Secrets, load_secrets
from sidecar.live import LiveStreams
from sidecar.locks import ProcessLock
from sidecar.mailer import Mailer
from sidecar.media_auth import MediaAuth
from sidecar.mediamtx import MediaMTXClient
from sidecar.metrics import Metrics
from sidecar.outbound import Upstreams, build_upstreams
from sidecar.publishers import Publishers
from sidecar.revocation import Revoker
from sidecar.rules import RuleBook
from sidecar.session_writer import SessionWriter
from sidecar.sessions import LocalSessions
from sidecar.settings import Settings
from sidecar.share_links import SUBJECT_PREFIX, ShareLinks
from sidecar.sources import Sources
from sidecar.store import Store
from sidecar.tokens import ServiceTokenAuth, TokenIssuer
from sidecar.users import UserAdmin

T = TypeVar("T")


class AuthentikNotConnected(Directory):
    """Authentik mode without its URL or API token: identity headers work, directory calls say why not."""

    async def _fail(self) -> None:
        raise DirectoryError("the Authentik directory needs SIDECAR_AUTHENTIK_URL and SIDECAR_AUTHENTIK_TOKEN")

    async def get_user(self, username: str) -> User | None:
        await self._fail()
        return None

    async def list_users(self, search: str = "", page: int = 1, page_size: int = 50) -> UserPage:
        await self._fail()
        raise AssertionError

    async def list_groups(self) -> list[Group]:
        await self._fail()
        return []

    async def get_group(self, name: str) -> Group | None:
        await self._fail()
        return None

    async def create_group(self, name: str) -> bool:
        await self._fail()
        return False

    async def create_user(
        self, username: str, *, email: str = "", name: str = "", active: bool = True, claim: str = ""
    ) -> User:
        await self._fail()
        raise AssertionError

    async def add_to_group(self, username: str, group: str) -> bool:
        await self._fail()
        return False

    async def remove_from_group(self, username: str, group: str, *, keep_one_of: Sequence[str] = ()) -> bool:
        await self._fail()
        return False

    async def set_active(self, username: str, active: bool, *, keep_one_of: Sequence[str] = ()) -> None:
        await self._fail()

    async def set_password(self, username: str, password: str) -> None:
        await self._fail()

    async def count_active_members(self, groups: Sequence[str]) -> int:
        await self._fail()
        return 0

    async def ping(self) -> None:
        await self._fail()


@dataclass
class Services:
    settings: Settings
    secrets: Secrets
    store: Store
    roles: RolePolicy
    proxies: TrustedProxies
    directory: Directory
    rules: RuleBook
    users: UserAdmin
    sessions: LocalSessions | None
    metrics: Metrics
    # For anything but the clients below (the readiness checks): each request still goes through the pool of the
    # upstream it is for. `upstreams` holds one client, and one connection pool, per upstream.
    http: httpx.AsyncClient
    upstreams: Upstreams
    mediamtx_peers: TrustedProxies
    tokens: TokenIssuer
    publishers: Publishers
    media_auth: MediaAuth
    live: LiveStreams
    mediamtx: MediaMTXClient | None
    revoker: Revoker
    sources: Sources
    share_links: ShareLinks
    mailer: Mailer
    access_requests: AccessRequests
    group_lookup: GroupLookup
    first_admin: FirstAdmin | None

    def warm(self) -> None:
        """Load what MediaMTX's first callback would otherwise wait for: keys, revocations, the issued-token
        register and the compiled rules."""
        self.tokens.jwks()
        self.rules.matcher()

    async def aclose(self) -> None:
        await self.revoker.idle()
        self.revoker.close()
        self.media_auth.sessions.close()
        await self.upstreams.aclose()
        self.store.close()


def build_services(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> Services:
    secrets, _ = load_secrets(settings)
    store = Store(settings.database_path)
    roles = RolePolicy(admin_groups=frozenset(settings.admin_groups), prefix=settings.group_prefix)
    # One pool per upstream, each call held to one total deadline and a size cap (sidecar/outbound.py). Each client
    # serves every user: none keeps a cookie one upstream set for one person to replay it for the next request.
    upstreams = build_upstreams(
        timeout=settings.upstream_timeout,
        authentik_url=settings.authentik_url,
        mediamtx_url=settings.mediamtx_api_url,
        editor_url=settings.editor_url,
        transport=transport,
    )
    directory: Directory
    sessions: LocalSessions | None = None
    if settings.mode == "local":
        local = LocalDirectory(store)
        sessions = LocalSessions(store, local, settings)
        directory = local
    elif settings.authentik_url and settings.authentik_token:
        token = settings.authentik_token.get_secret_value()
        client = AuthentikClient(upstreams.authentik, settings.authentik_url, token)
        directory = AuthentikDirectory(client, group_search=settings.group_prefix)
    else:
        directory = AuthentikNotConnected()
    metrics = Metrics()
    rules = RuleBook(store, directory, roles)
    tokens = TokenIssuer(store, settings)
    tokens.ensure_key()
    publishers = Publishers(store)
    mediamtx = None
    if settings.mediamtx_api_url:
        mediamtx = MediaMTXClient(upstreams.mediamtx, settings.mediamtx_api_url, auth=ServiceTokenAuth(tokens))
    users = UserAdmin(store, directory, roles, ProcessLock(settings.data_dir / "admin-change.lock"))
    # Local mode reads its own database every time; Authentik's answers are reused for a short while.
    lookup = GroupLookup(directory, roles, settings.group_cache_seconds if settings.mode == "authentik" else 0.0)
    users.on_changed = lookup.forget
    users.grants_still = tokens.still_grants
    revoker = Revoker(store, rules, directory, roles, mediamtx, tokens, publishers)
    publishers.on_revoke = revoker.publisher_revoked
    media_auth = MediaAuth(
        rules,
        roles,
        tokens,
        publishers,
        SessionWriter(settings.database_path),
        secrets.api_key,
        TrustedProxies.parse(settings.mediamtx_local_api_ips),
    )
    revoker.before_recheck = media_auth.sessions.flush
    share_links = ShareLinks(store, rules, roles, tokens, revoker, settings, lookup)
    revoker.subject_checks[SUBJECT_PREFIX] = share_links.still_plays
    rules.on_change = revoker.rules_changed

    def lost_access(username: str, reason: str) -> None:
        revoker.user_lost_access(username, reason)
        share_links.creator_lost_access(username, reason)  # links play with their creator's access, or not at all

    users.on_lost_access = lost_access
    mailer = Mailer(store, settings)
    return Services(
        settings=settings,
        secrets=secrets,
        store=store,
        roles=roles,
        proxies=TrustedProxies.parse(settings.trusted_proxies),
        directory=directory,
        rules=rules,
        users=users,
        sessions=sessions,
        metrics=metrics,
        http=upstreams.shared,
        upstreams=upstreams,
        mediamtx_peers=TrustedProxies.parse(settings.mediamtx_allowed_ips),
        tokens=tokens,
        publishers=publishers,
        media_auth=media_auth,
        live=LiveStreams(store),
        mediamtx=mediamtx,
        revoker=revoker,
        sources=Sources(store, mediamtx),
        share_links=share_links,
        mailer=mailer,
        access_requests=AccessRequests(store, users, mailer, settings),
        group_lookup=lookup,
        first_admin=None if sessions is None else FirstAdmin(store, users, settings, sessions.failures),
    )


def run_with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run one piece of async work against freshly built services, outside any event loop (CLI, scripts)."""

    async def run() -> T:
        services = build_services(settings)
        try:
            return await work(services)
        finally:
            await services.aclose()

    return asyncio.run(run())
