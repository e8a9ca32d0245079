"""Audit events as sentences a person reads ("alice added bob to vid_public"), for the audit page and its API."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

Detail = Mapping[str, Any]


def _list(value: object, empty: str = "none") -> str:
    if isinstance(value, list | tuple) and value:
        return ", ".join(str(item) for item in value)
    return empty


def _when(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "until revoked"
    return "until " + datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _from(detail: Detail) -> str:
    source = detail.get("source")
    return f" (from {source})" if isinstance(source, str) and source else ""


def _kick(actor: str, target: str, detail: Detail) -> str:
    where = f"{detail.get('protocol', '?')} session on {detail.get('path', '?')}"
    outcome = "was stopped" if detail.get("kicked") else "could not be stopped (MediaMTX did not answer); it is refused"
    return f"{target}'s {where} {outcome}: {detail.get('reason', 'access changed')}"


def _share_revoke(actor: str, target: str, detail: Detail) -> str:
    reason = f" ({detail['reason']})" if detail.get("reason") else ""
    return f"{actor} revoked share link {target} to {detail.get('path', '?')}{reason}"


def _denied(actor: str, target: str, detail: Detail) -> str:
    return f"{actor} was refused {detail.get('action', 'an account change')} for {target}: {detail.get('reason', '')}"


SENTENCES: dict[str, Callable[[str, str, Detail], str]] = {
    "access.request": lambda a, t, d: f"someone asked for access as {t} ({d.get('email', '')})",
    "access.request_repeated": lambda a, t, d: f"the access request for {t} was sent again; nothing changed",
    "access.confirm": lambda a, t, d: f"{t} confirmed their access request from the email",
    "access.confirm_capped": lambda a, t, d: f"no confirmation email for {t}: its address had its share this hour",
    "access.review": lambda a, t, d: f"{a} opened the review link of {t}'s access request",
    "access.approve": lambda a, t, d: f"{a} approved the access request of {t} with {_list(d.get('groups'))}",
    "access.reject": lambda a, t, d: f"{a} rejected the access request of {t}",
    "editor.open": lambda a, t, d: f"{a} opened the editor",
    "editor.change": lambda a, t, d: f"{a} changed the editor's settings ({t})",
    "editor.denied": lambda a, t, d: f"{a} was refused in the editor ({t}): {d.get('reason', '')}",
    "editor.request": lambda a, t, d: f"{a} used the editor ({t})",
    "group.add": lambda a, t, d: f"{a} added {t} to {d.get('group', '?')}",
    "group.remove": lambda a, t, d: f"{a} removed {t} from {d.get('group', '?')}",
    "group.create": lambda a, t, d: f"{a} created the group {t}",
    "group.denied": lambda a, t, d: f"{a} was refused a change to the group {t}, which the sidecar does not manage",
    "keys.rotate": lambda a, t, d: f"{a} added signing key {t}",
    "login": lambda a, t, d: f"{t} signed in",
    "logout": lambda a, t, d: f"{t} signed out",
    "password.change": lambda a, t, d: f"{t} changed their password",
    "password.set": lambda a, t, d: f"{a} set the password of {t}",
    "password.set_by_link": lambda a, t, d: f"{t} set their password with the emailed link",
    "publisher.create": lambda a, t, d: f"{a} let publisher {t} publish to {d.get('pattern', '?')}",
    "publisher.revoke": lambda a, t, d: f"{a} revoked publisher {t}",
    "rule.set": lambda a, t, d: f"{a} made {t} visible to {_list(d.get('groups'), 'admins only')}",
    "rule.delete": lambda a, t, d: f"{a} deleted the rule for {t}",
    "session.kick": _kick,
    "share.create": lambda a, t, d: f"{a} shared {d.get('path', '?')} {_when(d.get('expires_at'))} (link {t})",
    "share.revoke": _share_revoke,
    "share.use": lambda a, t, d: f"share link {t} was used for {d.get('path', '?')} ({d.get('uses', '?')} uses so far)",
    "source.add": lambda a, t, d: f"{a} added the stream source {t}{_from(d)}",
    "source.change": lambda a, t, d: f"{a} changed the stream source {t}{_from(d)}",
    "source.delete": lambda a, t, d: f"{a} deleted the stream source {t}",
    "user.create": lambda a, t, d: f"{a} created the account {t} with {_list(d.get('groups'))}",
    "user.activate": lambda a, t, d: f"{a} activated {t}",
    "user.deactivate": lambda a, t, d: f"{a} deactivated {t}",
    "user.denied": _denied,
    "user.recovery_link": lambda a, t, d: f"{a} made a one-time password link for {t}",
    "user.recovery_email": lambda a, t, d: f"{a} had a password-reset email sent to {t}",
}


def describe(actor: str, action: str, target: str, detail: Detail) -> str:
    """One sentence for an event; an action without its own wording still reads as who did what to whom."""
    sentence = SENTENCES.get(action)
    if sentence is not None:
        try:
            return sentence(actor, target, detail)
        except (KeyError, TypeError, ValueError):  # an odd detail (older rows) falls back to the plain form
            pass
    return f"{actor} {action} {target}".strip()
