"""Shared pieces of the services' configuration loading (edge, ingest, api).

Every service reads one TOML file, validated by msgspec Structs, once in its entrypoint.
Errors name the file, the key path and what was expected; secrets come from files or
environment variables the configuration names, and never appear in an error message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration cannot be read or does not validate."""


def path_dec_hook(type_: type, obj: object) -> object:
    """msgspec decode hook: TOML strings into :class:`pathlib.Path`."""
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(f"cannot decode {type_!r}")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def toml_to_builtins(text: bytes | str, *, source: str) -> Any:
    try:
        return msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc


def convert(raw: object, type_: type[T], *, source: str) -> T:
    """Validate decoded TOML against ``type_``; the error says where (``$.a.b[0]``)."""
    try:
        return msgspec.convert(raw, type=type_, dec_hook=path_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def read_secret_file(path: Path | None, what: str) -> str | None:
    """A secret from its file (stripped), or None when no file is configured."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def secret_from_env(name: str) -> str:
    """A connection string from the environment; the error names the variable, not a value."""
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value
