"""The SSO bridge: the sidecar's one session in the vanilla editor, signed in with a service account.

The editor has its own login (a form, then a Flask `session` cookie) and knows nothing of the sidecar's users.
With `SIDECAR_EDITOR_USERNAME`/`SIDECAR_EDITOR_PASSWORD` set, the sidecar signs in itself and sends that cookie
with every request of an admin, so admins never see the editor's login page. The cookie stays on the server:
browsers never receive it. The editor's signing key is new per process, so a restart of the editor ends the
session; the proxy then asks for a new one here.
"""

from __future__ import annotations

import asyncio
import logging
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("sidecar.editor")

EDITOR_COOKIE = "session"
LOGIN_PATH = "/login"
DEFAULT_SIGN_IN_SECONDS = 5.0  # without a connect timeout of the caller's


class EditorSignInFailed(Exception):
    """The editor refused the service account (wrong credentials) or answered the login form unexpectedly."""


class EditorSession:
    """One editor session shared by every admin request; concurrent renewals sign in only once."""

    def __init__(self, editor_url: str, username: str, password: str, timeout: httpx.Timeout) -> None:
        self._login_url = editor_url.rstrip("/") + LOGIN_PATH
        self._username = username
        self._password = password
        self._timeout = timeout
        self._cookie: str | None = None
        self._lock = asyncio.Lock()

    async def cookie(self, http: httpx.AsyncClient) -> str:
        """The current session cookie's value, signing in first when there is none yet."""
        current = self._cookie
        if current is not None:
            return current
        return await self.renew(http, stale=None)

    async def renew(self, http: httpx.AsyncClient, stale: str | None) -> str:
        """A new session, unless another request already replaced `stale` while this one waited for the lock."""
        async with self._lock:
            if self._cookie is not None and self._cookie != stale:
                return self._cookie
            self._cookie = None
            self._cookie = await self._sign_in(http)
            return self._cookie

    def forget(self, stale: str) -> None:
        """Drop a session the editor no longer accepts, so the next request signs in again."""
        if self._cookie == stale:
            self._cookie = None

    async def _sign_in(self, http: httpx.AsyncClient) -> str:
        form = {"username": self._username, "password": self._password}
        # Built directly, so no cookie from the client's jar goes along; redirects are not followed: the cookie
        # is taken from the login answer itself.
        request = httpx.Request("POST", self._login_url, data=form, extensions={"timeout": self._timeout.as_dict()})
        deadline = self._timeout.connect or DEFAULT_SIGN_IN_SECONDS
        try:
            async with asyncio.timeout(deadline):  # the whole sign-in, however slowly the editor answers
                response = await http.send(request, follow_redirects=False)
                await response.aclose()
        except TimeoutError:
            raise httpx.ReadTimeout(f"the editor did not answer the sign-in within {deadline:g} s") from None
        cookie = _session_cookie(response)
        # A refused login re-renders the form, or redirects back to it (Flask may still set a cookie then, for a
        # flashed message); only a redirect elsewhere with a session cookie is a signed-in session.
        if not response.is_redirect or cookie is None or is_login_location(response.headers.get("location", "")):
            log.warning("the editor refused the sidecar's service account (HTTP %d)", response.status_code)
            raise EditorSignInFailed
        log.info("signed in to the editor as its service account")
        return cookie


def _session_cookie(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        morsel = parsed.get(EDITOR_COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


def is_login_location(location: str) -> bool:
    """Whether a redirect points at the editor's login page (relative, or absolute to any host)."""
    return urlsplit(location).path.rstrip("/") == LOGIN_PATH
