"""The first admin of a local directory: made by `sidecar bootstrap`, or claimed once in the browser with the
one-time setup secret bootstrap writes into the data dir. Only a data dir that has never had an account offers it,
and it only ever creates a new account; an operator who lost every admin recovers from the server's shell."""

from __future__ import annotations

import asyncio
import hmac

from sidecar.directory import User
from sidecar.directory.base import InvalidName, validate_username
from sidecar.errors import BadRequest, Forbidden
from sidecar.keys import ensure_secret, secret_path
from sidecar.passwords import check_strength
from sidecar.settings import Settings
from sidecar.store import Store
from sidecar.throttle import FailureLimits
from sidecar.users import UserAdmin

SETUP_SECRET = "setup_secret"  # noqa: S105 (the file name, not a secret)
CLAIMED = "first_admin_claimed"  # meta key: set once the first admin exists, never unset
CLOSED = (
    "the first admin already exists: sign in, or recover an admin on the server with "
    "`sidecar users set-password USERNAME --password-stdin --admin`"
)
NO_SECRET = "no setup secret: run `sidecar bootstrap --setup-secret` on the server"  # noqa: S105 (a message)
WRONG_SECRET = "wrong setup secret"  # noqa: S105 (a message)


def admin_group(settings: Settings) -> str:
    """The group the first admin joins: the first admin group with the prefix, else `<prefix>admin`."""
    return next(
        (g for g in settings.admin_groups if g.startswith(settings.group_prefix)), settings.group_prefix + "admin"
    )


def never_had_admin(store: Store) -> bool:
    """True only for a directory that has never held an account: renaming the admin groups or losing the last
    admin never reopens the first-admin step."""
    return store.get_meta(CLAIMED) is None and store.count_users() == 0


def write_setup_secret(settings: Settings) -> str:
    """The one-time setup secret (created with mode 0600 unless it exists already)."""
    value, _ = ensure_secret(settings, SETUP_SECRET, None)
    return value


def setup_secret(settings: Settings) -> str | None:
    try:
        return secret_path(settings, SETUP_SECRET).read_text().strip() or None
    except FileNotFoundError:
        return None


async def make_first_admin(users: UserAdmin, settings: Settings, username: str, password: str, actor: str) -> User:
    """A new account in the admin group (never an existing one: that is a 409 from the directory)."""
    check_strength(password)
    group = admin_group(settings)
    await users.create_group(group, actor=actor)
    user = await users.add_user(username, [group], password, actor=actor)
    with users.store.transaction() as db:
        users.store.claim_meta(db, CLAIMED)
    return user


class FirstAdmin:
    """The browser's first-admin step (`PUT /auth/password` without a session)."""

    def __init__(self, store: Store, users: UserAdmin, settings: Settings, failures: FailureLimits) -> None:
        self.store = store
        self.users = users
        self.settings = settings
        self.failures = failures
        self._lock = asyncio.Lock()

    def never_had_admin(self) -> bool:
        return never_had_admin(self.store)

    def offered(self) -> bool:
        """Whether the sign-in page shows the step: a data dir that never had an account, with a setup secret."""
        return never_had_admin(self.store) and setup_secret(self.settings) is not None

    async def claim(self, username: str, password: str, secret: str, ip: str) -> User:
        with self.failures.attempt("Too many failed attempts; wait a minute and try again", ip=ip) as attempt:
            if not never_had_admin(self.store):
                raise Forbidden(CLOSED)
            expected = setup_secret(self.settings)
            if expected is None:
                raise Forbidden(NO_SECRET)
            if not hmac.compare_digest(secret.encode(), expected.encode()):
                attempt.fail()
                raise Forbidden(WRONG_SECRET)
        check_strength(password)  # before the step is taken, so a refused password leaves it open
        try:
            validate_username(username)
        except InvalidName as error:
            raise BadRequest(str(error), field="username") from error
        async with self._lock:
            # Taken in one transaction: of two claims at once, in this process or another, one wins.
            with self.store.transaction() as db:
                if self.store.count_users() != 0 or not self.store.claim_meta(db, CLAIMED):
                    raise Forbidden(CLOSED)
            try:
                user = await make_first_admin(self.users, self.settings, username, password, actor="first-admin")
            except BaseException:
                with self.store.transaction() as db:
                    if self.store.count_users() == 0:  # nothing was made: the step stays open
                        self.store.delete_meta(db, CLAIMED)
                raise
        secret_path(self.settings, SETUP_SECRET).unlink(missing_ok=True)
        return user
