"""The API's exception family (drawn in :mod:`api`)."""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error the api package raises on purpose."""


class ConfigError(ApiError):
    """The configuration file or an environment variable it names is wrong."""


class MigrationError(ApiError):
    """A migration failed, or the applied history does not match the files."""


class RegistryError(ApiError):
    """A registry operation was refused (unknown tenant, wrong state, ...)."""


class NotFoundError(RegistryError):
    """No such object, or not visible to the caller: never tells which."""


class QuotaError(RegistryError):
    """A tenant's quota refuses the operation (the message says which quota and how to raise it)."""
