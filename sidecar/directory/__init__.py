"""The people and groups: one `Directory` interface, with local (SQLite) and Authentik implementations."""

from sidecar.directory.base import Directory, DirectoryError, Group, User, UserPage

__all__ = ["Directory", "DirectoryError", "Group", "User", "UserPage"]
