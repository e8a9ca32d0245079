"""Domain errors that the web layer turns into `{"error": ...}` responses in one place."""

from __future__ import annotations


class SidecarError(Exception):
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadRequest(SidecarError):
    status = 400


class Unauthorized(SidecarError):
    status = 401

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)


class Forbidden(SidecarError):
    status = 403

    def __init__(self, message: str = "Forbidden") -> None:
        super().__init__(message)


class NotFoundError(SidecarError):
    status = 404


class ConflictError(SidecarError):
    status = 409


class TooManyRequests(SidecarError):
    status = 429


class Unavailable(SidecarError):
    status = 503
