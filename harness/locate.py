"""Where the server programs live.

Every lookup goes: environment variable, then the file ``scripts/bootstrap.sh`` writes
(``$DERRICK_CACHE/env``), then the places Debian and the bootstrap put things. A miss raises
:class:`ToolNotFoundError` naming what to install; nothing is ever silently skipped.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness.errors import ToolNotFoundError

_HARNESS_DIR = Path(__file__).resolve().parent
QUESTDB_LOCK = _HARNESS_DIR / "questdb.lock"
S3PROXY_LOCK = _HARNESS_DIR / "s3proxy.lock"
_BOOTSTRAP_HINT = "run ./derrick bootstrap"


def cache_dir() -> Path:
    """``$DERRICK_CACHE``, else ``$XDG_CACHE_HOME/derrick``, else ``~/.cache/derrick``."""
    if explicit := os.environ.get("DERRICK_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "derrick"


def _read_key_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def _setting(name: str) -> str | None:
    """An environment variable, else the same key in ``$DERRICK_CACHE/env``."""
    if value := os.environ.get(name):
        return value
    env_file = cache_dir() / "env"
    if env_file.is_file():
        return _read_key_values(env_file).get(name) or None
    return None


def _existing(path: str | Path, what: str, variable: str) -> Path:
    candidate = Path(path)
    if not candidate.exists():
        raise ToolNotFoundError(f"{what} not found at {candidate} (from {variable})")
    return candidate


def _pin(lock: Path) -> tuple[str, str]:
    values = _read_key_values(lock)
    try:
        return values["version"], values["sha256"]
    except KeyError as exc:
        raise ToolNotFoundError(f"{lock} lacks {exc.args[0]}=") from exc


def questdb_pin() -> tuple[str, str]:
    """The pinned QuestDB ``(version, sha256)`` from ``harness/questdb.lock``."""
    return _pin(QUESTDB_LOCK)


def s3proxy_jar() -> Path:
    """The pinned S3Proxy jar (``DERRICK_S3PROXY_JAR``, else the bootstrap cache)."""
    if configured := _setting("DERRICK_S3PROXY_JAR"):
        return _existing(configured, "S3Proxy jar", "DERRICK_S3PROXY_JAR")
    version, _ = _pin(S3PROXY_LOCK)
    jar = cache_dir() / "s3proxy" / f"s3proxy-{version}-jar-with-dependencies.jar"
    if not jar.is_file():
        raise ToolNotFoundError(f"S3Proxy {version} jar not found at {jar} ({_BOOTSTRAP_HINT})")
    return jar


def promtool_binary() -> Path:
    """Prometheus's ``promtool`` (``DERRICK_PROMTOOL``; the bootstrap unpacks Debian's)."""
    if configured := _setting("DERRICK_PROMTOOL"):
        return _existing(configured, "promtool", "DERRICK_PROMTOOL")
    found = shutil.which("promtool")
    if found:
        return Path(found)
    raise ToolNotFoundError(f"promtool not found ({_BOOTSTRAP_HINT})")


def prometheus_binary() -> Path:
    """Prometheus itself, unpacked beside promtool from Debian's package by the bootstrap."""
    promtool = promtool_binary()
    found = promtool.with_name("prometheus")
    if not found.is_file():
        raise ToolNotFoundError(f"prometheus not found beside {promtool} ({_BOOTSTRAP_HINT})")
    return found


def mosquitto_binary() -> Path:
    """The ``mosquitto`` broker executable (``DERRICK_MOSQUITTO``)."""
    if configured := _setting("DERRICK_MOSQUITTO"):
        return _existing(configured, "mosquitto", "DERRICK_MOSQUITTO")
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found:
        return Path(found)
    raise ToolNotFoundError(
        f"mosquitto not found (apt-get install mosquitto, or {_BOOTSTRAP_HINT})"
    )


def pg_bindir() -> Path:
    """The PostgreSQL server binaries directory (``DERRICK_PG_BINDIR``), newest version first."""
    if configured := _setting("DERRICK_PG_BINDIR"):
        bindir = _existing(configured, "PostgreSQL bin dir", "DERRICK_PG_BINDIR")
    else:
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
            reverse=True,
        )
        usable = [p for p in candidates if (p / "initdb").exists() and (p / "postgres").exists()]
        if not usable:
            raise ToolNotFoundError(
                "PostgreSQL server binaries not found "
                f"(apt-get install postgresql, or {_BOOTSTRAP_HINT})"
            )
        bindir = usable[0]
    for program in ("initdb", "postgres", "pg_isready"):
        if not (bindir / program).exists():
            raise ToolNotFoundError(f"{bindir / program} is missing ({_BOOTSTRAP_HINT})")
    return bindir


@functools.cache
def java_feature_version(java: Path) -> int:
    """The feature release (17, 21, 25, ...) of a ``java`` executable."""
    try:
        result = subprocess.run(
            [str(java), "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        raise ToolNotFoundError(f"cannot run {java}: {exc}") from exc
    match = re.search(r"java\.specification\.version = (\d+)", result.stderr + result.stdout)
    if match is None:
        raise ToolNotFoundError(f"cannot tell the version of {java}")
    return int(match.group(1))


def java_binary(minimum: int = 17) -> Path:
    """A ``java`` of at least ``minimum`` (``DERRICK_JAVA``, Temurin 25, then ``PATH``)."""
    configured = _setting("DERRICK_JAVA")
    candidates: list[Path] = []
    if configured:
        candidates.append(_existing(configured, "java", "DERRICK_JAVA"))
    else:
        candidates.append(Path("/usr/lib/jvm/temurin-25-jdk-amd64/bin/java"))
        if on_path := shutil.which("java"):
            candidates.append(Path(on_path))
        candidates.append(Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"))
    for java in candidates:
        if java.exists() and java_feature_version(java) >= minimum:
            return java
    raise ToolNotFoundError(
        f"no Java >= {minimum} found among {[str(c) for c in candidates]} "
        f"(apt-get install openjdk-17-jre-headless, set DERRICK_JAVA, or {_BOOTSTRAP_HINT})"
    )


def questdb_jar() -> Path:
    """The pinned QuestDB server jar (``DERRICK_QUESTDB_JAR``, else the bootstrap cache)."""
    if configured := _setting("DERRICK_QUESTDB_JAR"):
        return _existing(configured, "QuestDB jar", "DERRICK_QUESTDB_JAR")
    version, _ = questdb_pin()
    jar = cache_dir() / "questdb" / f"questdb-{version}.jar"
    if not jar.is_file():
        raise ToolNotFoundError(f"QuestDB {version} jar not found at {jar} ({_BOOTSTRAP_HINT})")
    return jar
