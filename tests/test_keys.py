"""Secrets on first run (mode 0600, given settings win, never in repr) and password hashing rules."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest

from sidecar import passwords
from sidecar.errors import BadRequest
from sidecar.keys import Secrets, ensure_secret, load_secrets, loose_secret_files, secret_path
from sidecar.settings import Settings

SettingsFactory = Callable[..., Settings]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- secrets ----------------------------------------------------------------------------------------------------


def test_secrets_are_generated_private_on_first_run(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key=None)
    found, created = load_secrets(settings)
    assert sorted(created) == ["api_key", "session_secret"]
    for name, value in (("api_key", found.api_key), ("session_secret", found.session_secret)):
        path = secret_path(settings, name)
        assert mode(path) == 0o600
        assert path.read_text().strip() == value
        assert len(value) >= 40
    assert found.api_key != found.session_secret
    assert loose_secret_files(settings) == []


def test_generated_secrets_differ_between_data_dirs(make_settings: SettingsFactory, tmp_path: Path) -> None:
    one, _ = load_secrets(make_settings(api_key=None, data_dir=tmp_path / "one"))
    two, _ = load_secrets(make_settings(api_key=None, data_dir=tmp_path / "two"))
    assert one.api_key != two.api_key
    assert one.session_secret != two.session_secret


def test_second_load_returns_the_same_values(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key=None)
    first, created = load_secrets(settings)
    second, created_again = load_secrets(settings)
    assert created
    assert created_again == []
    assert (second.api_key, second.session_secret) == (first.api_key, first.session_secret)


def test_given_setting_wins_over_the_file(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key=None)
    from_file, _ = load_secrets(settings)
    given = make_settings(api_key="given-api-key-0123456789", session_secret="given-session-secret-0123")
    found, created = load_secrets(given)
    assert found.api_key == "given-api-key-0123456789"
    assert found.session_secret == "given-session-secret-0123"
    assert created == []
    assert secret_path(settings, "api_key").read_text().strip() == from_file.api_key


def test_given_setting_does_not_write_a_file(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key="given-api-key-0123456789")
    _, created = load_secrets(settings)
    assert created == ["session_secret"]
    assert not secret_path(settings, "api_key").exists()


def test_empty_given_setting_falls_back_to_a_generated_secret(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key="")
    found, created = load_secrets(settings)
    assert "api_key" in created
    assert found.api_key
    assert secret_path(settings, "api_key").read_text().strip() == found.api_key


def test_existing_file_is_read_and_stripped(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key=None)
    settings.data_dir.mkdir(parents=True)
    path = secret_path(settings, "api_key")
    path.write_text("operator-chosen-key-0123456789\n")
    path.chmod(0o600)
    value, created = ensure_secret(settings, "api_key", None)
    assert (value, created) == ("operator-chosen-key-0123456789", False)


@pytest.mark.parametrize("contents", ["", "\n", "   \n"])
def test_empty_secret_file_is_never_used_as_the_api_key(make_settings: SettingsFactory, contents: str) -> None:
    settings = make_settings(api_key=None)
    settings.data_dir.mkdir(parents=True)
    path = secret_path(settings, "api_key")
    path.write_text(contents)
    path.chmod(0o600)
    found, _ = load_secrets(settings)
    assert found.api_key.strip() != ""


def test_world_readable_secret_file_is_reported(make_settings: SettingsFactory) -> None:
    settings = make_settings(api_key=None)
    load_secrets(settings)
    path = secret_path(settings, "session_secret")
    path.chmod(0o644)
    assert loose_secret_files(settings) == [path]


def test_repr_of_secrets_hides_the_values(make_settings: SettingsFactory) -> None:
    found, _ = load_secrets(make_settings(api_key=None))
    for text in (repr(found), str(found), f"{found}", f"{found!r}", repr([found]), repr({"s": found})):
        assert found.api_key not in text
        assert found.session_secret not in text
    assert "hidden" in repr(found)
    assert repr(Secrets(api_key="k" * 20, session_secret="s" * 20)) == repr(found)


# -- passwords --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["", "short", "123456789", "é" * 9, "a" * 73, "é" * 37, "🔑" * 19],
)
def test_too_short_or_too_long_password_is_refused(password: str) -> None:
    with pytest.raises(BadRequest) as caught:
        passwords.check_strength(password)
    assert caught.value.field == "password"
    with pytest.raises(BadRequest):
        passwords.hash_password_sync(password)


@pytest.mark.parametrize("password", ["0123456789", "a" * 72, "é" * 36, "🔑" * 18, "correct horse battery"])
def test_acceptable_password_passes_strength_check(password: str) -> None:
    passwords.check_strength(password)


async def test_async_hash_refuses_short_password_before_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_hash(*args: object) -> bytes:
        raise AssertionError("bcrypt.hashpw called for a refused password")

    monkeypatch.setattr(bcrypt, "hashpw", must_not_hash)
    with pytest.raises(BadRequest) as caught:
        await passwords.hash_password("short")
    assert caught.value.field == "password"


@pytest.mark.usefixtures("cheap_bcrypt")
async def test_hash_and_verify_round_trip() -> None:
    hashed = await passwords.hash_password("correct horse battery")
    assert hashed.startswith("$2b$")
    assert "correct horse battery" not in hashed
    assert await passwords.verify_password("correct horse battery", hashed)
    assert not await passwords.verify_password("correct horse batterY", hashed)
    assert hashed != await passwords.hash_password("correct horse battery")


async def test_unknown_user_verification_still_runs_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed_password: bytes) -> bool:
        calls.append((password, hashed_password))
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    assert await passwords.verify_password("no-such-user-placeholder", None) is False
    assert await passwords.verify_password("whatever-password", None) is False
    assert len(calls) == 2
    assert all(hashed.startswith(b"$2") for _, hashed in calls)


def test_unknown_user_check_costs_as_much_as_a_real_hash() -> None:
    dummy_cost = passwords._DUMMY_HASH.split("$")[2]
    real_cost = passwords.hash_password_sync("correct horse battery").split("$")[2]
    assert dummy_cost == real_cost


@pytest.mark.usefixtures("cheap_bcrypt")
async def test_password_longer_than_72_bytes_does_not_verify_against_its_prefix() -> None:
    stored = "p" * 72
    hashed = await passwords.hash_password(stored)
    assert await passwords.verify_password(stored, hashed)
    assert not await passwords.verify_password(stored + "-anything-appended", hashed)
