"""Runtime configuration: every `SIDECAR_*` environment variable (or `.env` entry) and its safe default."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Sidecar settings. The README configuration table mirrors these fields one to one."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_", env_file=".env", extra="ignore")

    mode: Literal["local", "authentik"] = Field(
        "local", description="Where the directory lives: `local` (SQLite in the data dir) or `authentik` (its API)."
    )
    data_dir: Path = Field(Path("data"), description="SQLite database and generated secrets (mode 0600).")
    host: str = Field("127.0.0.1", description="Address `sidecar serve` listens on.")
    port: int = Field(8088, ge=1, le=65535, description="Port `sidecar serve` listens on.")
    trusted_proxies: CommaList = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="CIDRs whose identity headers (`X-Authentik-*`) are honoured; everyone else is anonymous.",
    )
    api_key: SecretStr | None = Field(
        None, description="Automation key for `X-API-Key`; generated into `<data_dir>/api_key` when unset."
    )
    session_secret: SecretStr | None = Field(
        None, description="Signs CSRF tokens; generated into `<data_dir>/session_secret` when unset."
    )
    authentik_url: str | None = Field(
        None, description="Authentik base URL (authentik mode), e.g. https://sso.example."
    )
    authentik_token: SecretStr | None = Field(None, description="Authentik API token (authentik mode).")
    authentik_recovery_email_stage: str | None = Field(
        None, description="UUID of the Authentik email stage that sends password-reset emails from the Users page."
    )
    mediamtx_api_url: str | None = Field(None, description="MediaMTX control API, e.g. http://127.0.0.1:9997.")
    editor_url: str | None = Field(
        None,
        description="The vanilla MediaMTX web editor, e.g. http://127.0.0.1:5000; when set, the sidecar proxies every "
        "other path to it for admins and adds the overlay to its pages.",
    )
    editor_username: str | None = Field(
        None,
        description="A user of the editor's own users.json the sidecar signs in as (with `SIDECAR_EDITOR_PASSWORD`), "
        "so admins never see the editor's login page; the editor's login, logout, registration, password recovery "
        "and mail settings are then replaced by the sidecar's (or Authentik's).",
    )
    editor_password: SecretStr | None = Field(None, description="Password of `SIDECAR_EDITOR_USERNAME` in the editor.")
    group_prefix: str = Field("vid_", min_length=1, description="Only groups with this prefix grant or are managed.")
    admin_groups: CommaList = Field(
        default_factory=lambda: ["vid_admin", "authentik Admins"],
        description="Groups whose members are admins (exact, case-sensitive names).",
    )
    group_cache_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Authentik mode: how long a person's groups read from Authentik's API are reused; changes made "
        "in Authentik itself apply within this time (the sidecar's own changes apply at once).",
    )
    session_ttl_seconds: int = Field(86400, ge=60, description="Lifetime of a local-mode login token.")
    login_rate_ip: str = Field(
        "20/minute", description="Failed sign-ins and password changes allowed per client IP (local mode)."
    )
    login_rate_user: str = Field(
        "5/minute",
        description="Failed sign-ins and password changes allowed per username from one client IP (local mode); "
        "failures from other addresses never lock the person out.",
    )
    initial_admin: str = Field("admin", description="Username of the first admin created by `sidecar bootstrap`.")
    bootstrap_password: SecretStr | None = Field(
        None, description="Password `sidecar bootstrap` gives the first admin; a random one is printed once when unset."
    )
    allowed_origins: CommaList = Field(
        default_factory=list,
        description="Extra origins (scheme://host[:port]) accepted on state-changing requests besides the own host.",
    )
    mediamtx_allowed_ips: CommaList = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="CIDRs allowed to call `/mediamtx/auth` and `/mediamtx/hooks/*` (where MediaMTX runs).",
    )
    mediamtx_local_api_ips: CommaList = Field(
        default_factory=list,
        description="Client IPs (as MediaMTX reports them) that may use MediaMTX's api/metrics/pprof without "
        "credentials, like MediaMTX's own authInternalUsers default; e.g. the editor on MediaMTX's host.",
    )
    jwt_issuer: str = Field("mediamtx-access-sidecar", description="`iss` of playback tokens (`authJWTIssuer`).")
    jwt_audience: str = Field("mediamtx", description="`aud` of playback tokens (`authJWTAudience`).")
    jwt_claim_key: str = Field("mediamtx_permissions", description="Claim holding the permissions (`authJWTClaimKey`).")
    token_ttl_seconds: int = Field(600, ge=30, le=86400, description="Lifetime of a playback token.")
    hls_url: str = Field(
        "",
        description="Base URL browsers load MediaMTX's HLS from (e.g. https://video.example.org:8888); empty means "
        "the page's own host on port 8888.",
    )
    viewer_share_links: bool = Field(False, description="Whether viewers (not only admins) may create share links.")
    demo: bool = Field(
        False,
        description="Set by `sidecar demo`: the streams page says its live paths are announced by the demo and that "
        "playback needs a real MediaMTX.",
    )
    smtp_host: str | None = Field(
        None, description="SMTP server for access-request emails; when unset no email is sent (links show in the API)."
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="Port of `SIDECAR_SMTP_HOST`.")
    smtp_username: str | None = Field(None, description="SMTP login name, if the server wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password of `SIDECAR_SMTP_USERNAME`.")
    smtp_from: str = Field("sidecar@localhost", description="From address of the emails the sidecar sends.")
    smtp_starttls: bool = Field(True, description="Whether to upgrade the SMTP connection with STARTTLS.")
    public_url: str = Field(
        "", description="The sidecar's public base URL (e.g. https://video.example.org) for links in emails."
    )
    upstream_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one call to Authentik or MediaMTX may take in all (connecting, sending, every read, "
        "retries), and connecting to the editor; one attempt to send mail may take 4 times this.",
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs.")

    _split = field_validator(
        "trusted_proxies",
        "admin_groups",
        "allowed_origins",
        "mediamtx_allowed_ips",
        "mediamtx_local_api_ips",
        mode="before",
    )(_split_commas)

    @field_validator("trusted_proxies", "mediamtx_allowed_ips", "mediamtx_local_api_ips")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("api_key", "session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None  # `SIDECAR_API_KEY=` (empty, as compose files often set it) means "generate one"
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (leave unset to generate one)")
        return value

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sidecar.db"

    @property
    def editor_bridge(self) -> bool:
        """Whether the sidecar signs admins in to the editor itself (both service credentials given)."""
        return bool(self.editor_url and self.editor_username and self.editor_password)
