"""Who is asking: roles from exact group tokens, identity headers, and the trusted-proxy check."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sidecar.identity import (
    DuplicateIdentityHeader,
    Role,
    RolePolicy,
    TrustedProxies,
    identity_header_values,
    principal_from_headers,
    split_groups,
)

ADMIN_GROUPS = frozenset({"vid_admin", "authentik Admins"})
ROLES = RolePolicy(admin_groups=ADMIN_GROUPS, prefix="vid_")

Headers = list[tuple[bytes, bytes]]


def headers(**fields: str) -> Headers:
    return [(f"X-Authentik-{name.capitalize()}".encode(), value.encode()) for name, value in fields.items()]


# -- roles ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["vid_admin"], Role.ADMIN),
        (["authentik Admins"], Role.ADMIN),
        (["vid_public", "vid_admin"], Role.ADMIN),
        (["vid_public"], Role.VIEWER),
        (["vid_private", "tak_admin"], Role.VIEWER),
        (["tak_admin"], Role.NONE),
        ([], Role.NONE),
        ([""], Role.NONE),
    ],
)
def test_role_for_groups(groups: list[str], role: Role) -> None:
    assert ROLES.role_for(groups) is role


@pytest.mark.parametrize(
    ("group", "role"),
    [
        ("VID_ADMIN", Role.NONE),
        ("vid_admin_old", Role.VIEWER),
        ("notvid_admin", Role.NONE),
        (" vid_admin", Role.NONE),
        ("vid_admin ", Role.VIEWER),
        ("Vid_admin", Role.NONE),
        ("authentik admins", Role.NONE),
        ("authentik Admins ", Role.NONE),
        ("vid_admin|", Role.VIEWER),
    ],
)
def test_lookalike_admin_group_does_not_grant_admin(group: str, role: Role) -> None:
    assert ROLES.role_for([group]) is role


@pytest.mark.parametrize(
    "groups_header",
    ["vid_admin_old", "notvid_admin", "VID_ADMIN", "vid_administrators", "xvid_admin|tak_admin", " vid_admin"],
)
def test_substring_of_admin_group_in_header_does_not_grant_admin(groups_header: str) -> None:
    found = principal_from_headers(headers(username="mallory", groups=groups_header), ROLES)
    assert found is not None
    assert found.role is not Role.ADMIN
    assert not found.is_admin


def test_missing_groups_header_gives_no_access() -> None:
    found = principal_from_headers(headers(username="alice"), ROLES)
    assert found is not None
    assert found.groups == frozenset()
    assert found.role is Role.NONE


def test_empty_groups_header_gives_no_access() -> None:
    found = principal_from_headers(headers(username="alice", groups=""), ROLES)
    assert found is not None
    assert found.role is Role.NONE


# -- split_groups -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vid_admin|vid_public", {"vid_admin", "vid_public"}),
        ("vid_admin", {"vid_admin"}),
        ("", set()),
        ("|", set()),
        ("||vid_public||", {"vid_public"}),
        (" vid_admin | vid_public", {" vid_admin ", " vid_public"}),
        ("VID_Admin|vid_admin", {"VID_Admin", "vid_admin"}),
        ("authentik Admins|tak_users", {"authentik Admins", "tak_users"}),
        ("vid_admin,vid_public", {"vid_admin,vid_public"}),
    ],
)
def test_split_groups_exact_tokens(value: str, expected: set[str]) -> None:
    assert split_groups(value) == frozenset(expected)


group_names = st.text(min_size=1, max_size=20).filter(lambda name: "|" not in name)


@hsettings(max_examples=200)
@given(st.lists(group_names, max_size=8))
def test_split_groups_round_trips_joined_names(names: list[str]) -> None:
    assert split_groups("|".join(names)) == frozenset(names)


@hsettings(max_examples=200)
@given(st.text(max_size=60))
def test_split_groups_never_raises_and_yields_nonempty_tokens(value: str) -> None:
    tokens = split_groups(value)
    assert all(token and "|" not in token for token in tokens)
    assert tokens == frozenset(value.split("|")) - {""}


@hsettings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["vid_admin", "authentik Admins", "vid_admin_old", "VID_ADMIN", "vid_public", "tak_x"]),
            st.text(alphabet="vid_amnAuthenk Ds|", max_size=18),
        ),
        max_size=6,
    )
)
def test_admin_iff_tokens_intersect_admin_groups_exactly(parts: list[str]) -> None:
    value = "|".join(parts)
    tokens = split_groups(value)
    role = ROLES.role_for(tokens)
    assert (role is Role.ADMIN) == bool(tokens & ADMIN_GROUPS)
    if role is not Role.ADMIN:
        assert (role is Role.VIEWER) == any(token.startswith("vid_") for token in tokens)


# -- identity headers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"X-Authentik-Groups", b"x-authentik-groups", b"X-AUTHENTIK-GROUPS", b"x-AuThEnTiK-gRoUpS"],
)
def test_identity_header_names_are_case_insensitive(name: bytes) -> None:
    values = identity_header_values([(b"x-authentik-username", b"alice"), (name, b"vid_public")])
    assert values == {"username": "alice", "groups": "vid_public"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"X-Authentik-Groups", b"X-Authentik-Groups"),
        (b"X-Authentik-Groups", b"x-authentik-groups"),
        (b"x-authentik-groups", b"X-AUTHENTIK-GROUPS"),
    ],
)
def test_duplicated_groups_header_is_rejected_not_merged(first: bytes, second: bytes) -> None:
    raw = [(b"x-authentik-username", b"mallory"), (first, b"vid_public"), (second, b"vid_admin")]
    with pytest.raises(DuplicateIdentityHeader) as caught:
        principal_from_headers(raw, ROLES)
    assert caught.value.header.lower() == "x-authentik-groups"


def test_duplicated_username_header_is_rejected() -> None:
    raw = [(b"X-Authentik-Username", b"alice"), (b"x-authentik-username", b"admin")]
    with pytest.raises(DuplicateIdentityHeader):
        identity_header_values(raw)


def test_duplicated_groups_header_with_empty_first_value_is_still_rejected() -> None:
    raw = [(b"x-authentik-username", b"mallory"), (b"x-authentik-groups", b""), (b"x-authentik-groups", b"vid_admin")]
    with pytest.raises(DuplicateIdentityHeader):
        principal_from_headers(raw, ROLES)


@pytest.mark.parametrize(
    "name",
    [b"X_Authentik_Groups", b"x-authentik_groups", b"x_authentik-groups", b"X_AUTHENTIK_GROUPS", b"xauthentikgroups"],
)
def test_underscore_groups_header_is_ignored(name: bytes) -> None:
    raw = [(b"x-authentik-username", b"mallory"), (name, b"vid_admin")]
    assert "groups" not in identity_header_values(raw)
    found = principal_from_headers(raw, ROLES)
    assert found is not None
    assert found.groups == frozenset()
    assert found.role is Role.NONE


def test_underscore_groups_header_beside_real_one_neither_merges_nor_counts_as_duplicate() -> None:
    raw = [
        (b"x-authentik-username", b"mallory"),
        (b"x-authentik-groups", b"vid_public"),
        (b"X_Authentik_Groups", b"vid_admin"),
    ]
    found = principal_from_headers(raw, ROLES)
    assert found is not None
    assert found.groups == frozenset({"vid_public"})
    assert found.role is Role.VIEWER


@pytest.mark.parametrize("name", [b"X_Authentik_Username", b"x-authentik_username"])
def test_underscore_username_header_is_ignored(name: bytes) -> None:
    assert principal_from_headers([(name, b"admin"), (b"x-authentik-groups", b"vid_admin")], ROLES) is None


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [(b"x-authentik-groups", b"vid_admin")],
        [(b"x-authentik-username", b""), (b"x-authentik-groups", b"vid_admin")],
        [(b"x-authentik-user", b"admin"), (b"x-authentik-groups", b"vid_admin")],
        [(b"x-remote-user", b"admin"), (b"x-authentik-groups", b"vid_admin")],
    ],
)
def test_groups_without_a_username_give_no_principal(raw: Headers) -> None:
    assert principal_from_headers(raw, ROLES) is None


def test_principal_from_headers_reads_all_identity_fields() -> None:
    raw = headers(username="alice", groups="vid_public|tak_users", email="a@example.org", name="Alice", uid="u-1")
    found = principal_from_headers(raw + [(b"x-other", b"ignored")], ROLES)
    assert found is not None
    assert (found.username, found.email, found.name, found.uid) == ("alice", "a@example.org", "Alice", "u-1")
    assert found.groups == frozenset({"vid_public", "tak_users"})
    assert found.role is Role.VIEWER
    assert found.source == "proxy"
    assert found.authenticated


def test_unknown_identity_fields_are_not_collected() -> None:
    raw = [(b"x-authentik-username", b"a"), (b"x-authentik-role", b"admin"), (b"x-authentik-groups2", b"vid_admin")]
    assert identity_header_values(raw) == {"username": "a"}


def test_non_utf8_header_value_does_not_raise() -> None:
    found = principal_from_headers(
        [(b"x-authentik-username", b"al\xffice"), (b"x-authentik-groups", b"vid_\xff")], ROLES
    )
    assert found is not None
    assert found.role is Role.VIEWER
    assert found.groups == frozenset({"vid_\ufffd"})


header_names = st.one_of(
    st.sampled_from(
        [
            b"x-authentik-username",
            b"X-Authentik-Username",
            b"x-authentik-groups",
            b"X-AUTHENTIK-GROUPS",
            b"x-authentik-email",
            b"x-authentik-name",
            b"x-authentik-uid",
            b"X_Authentik_Groups",
            b"x-authentik_groups",
            b"x-authentik-",
            b"host",
            b"x-forwarded-for",
        ]
    ),
    st.binary(max_size=30),
)
header_lists = st.lists(st.tuples(header_names, st.binary(max_size=30)), max_size=8)


@hsettings(max_examples=200)
@given(header_lists)
def test_arbitrary_header_lists_only_raise_duplicate_identity_header(raw: Headers) -> None:
    try:
        found = principal_from_headers(raw, ROLES)
    except DuplicateIdentityHeader:
        names = [name.decode("latin-1").lower() for name, _ in raw]
        identity = [name for name in names if name.startswith("x-authentik-")]
        assert len(identity) != len(set(identity))
        return
    groups_values = [value for name, value in raw if name.lower() == b"x-authentik-groups"]
    usernames = [value for name, value in raw if name.lower() == b"x-authentik-username"]
    if found is None:
        assert not usernames or usernames[0] == b""
        return
    assert found.username == usernames[0].decode("utf-8", errors="replace")
    expected = split_groups(groups_values[0].decode("utf-8", errors="replace")) if groups_values else frozenset()
    assert found.groups == expected


@hsettings(max_examples=200)
@given(header_lists, st.text(alphabet="vid_amn|", max_size=20))
def test_groups_come_only_from_the_groups_header(noise: Headers, groups: str) -> None:
    noise = [(name, value) for name, value in noise if not name.lower().startswith(b"x-authentik-")]
    raw = [(b"x-authentik-username", b"alice"), *noise, (b"x-authentik-groups", groups.encode())]
    found = principal_from_headers(raw, ROLES)
    assert found is not None
    assert found.groups == split_groups(groups)


# -- trusted proxies --------------------------------------------------------------------------------------------

PROXIES = TrustedProxies.parse(["127.0.0.0/8", "::1/128", "10.1.0.0/16", "fd00:1::/64"])


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.1.2.3", True),
        ("10.1.200.4", True),
        ("fd00:1::5", True),
        ("fd00:1:0:0:ffff::1", True),
        ("10.2.0.1", False),
        ("::ffff:10.2.0.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("fd00:2::5", False),
        ("203.0.113.7", False),
        ("::ffff:203.0.113.7", False),
        ("0.0.0.0", False),
        ("::", False),
        (None, False),
        ("", False),
        ("testclient", False),
        ("localhost", False),
        ("127.0.0.1:8080", False),
        ("127.0.0.1 ", False),
        ("[::1]", False),
        ("127.1", False),
        ("not an address", False),
    ],
)
def test_trusted_proxy_membership(host: str | None, trusted: bool) -> None:
    assert PROXIES.contains(host) is trusted


def test_empty_trusted_proxy_list_trusts_nobody() -> None:
    nobody = TrustedProxies.parse([])
    assert not nobody.contains("127.0.0.1")
    assert not nobody.contains("::1")


def test_ipv6_only_proxy_list_does_not_trust_ipv4_loopback() -> None:
    only_v6 = TrustedProxies.parse(["::1/128"])
    assert only_v6.contains("::1")
    assert not only_v6.contains("127.0.0.1")
    assert not only_v6.contains("::ffff:127.0.0.1")


@hsettings(max_examples=200)
@given(st.text(max_size=40))
def test_trusted_proxy_check_never_raises_on_garbage(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        assert PROXIES.contains(host) is False


@hsettings(max_examples=200)
@given(st.ip_addresses(v=4))
def test_ipv4_mapped_address_is_judged_like_its_ipv4_form(address: object) -> None:
    assert PROXIES.contains(f"::ffff:{address}") is PROXIES.contains(str(address))
