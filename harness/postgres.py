"""A throwaway PostgreSQL cluster on a free loopback port.

PostgreSQL refuses to run as root, so under root the cluster belongs to the system user
``derrick-pg`` (created when missing) and lives in a directory that user can reach. The
superuser ``derrick`` gets a generated password (scram-sha-256) that stays out of logs,
command lines and ``repr``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from harness import locate
from harness.errors import ServiceStartError
from harness.ports import allocate_port
from harness.process import RunAs, process_start_time
from harness.service import Service

logger = logging.getLogger(__name__)

SERVICE_USER = "derrick-pg"
_OUTSIDE_PREFIX = "derrick-pg-"
_OWNER_FILE = "derrick-owner"  # "<pid> <start time>" of the harness process that made it


def sweep_orphaned_cluster_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove the cluster directories made outside a private base directory (see
    ``Postgres._choose_cluster_dir``) whose harness process is gone: a run killed before it
    could close its clusters leaves them behind (~47 MB each). Directories without an owner
    mark (not ours, or being made) and those of live processes are kept."""
    removed = []
    for directory in Path(tmp or tempfile.gettempdir()).glob(_OUTSIDE_PREFIX + "*"):
        try:
            pid, start = (directory / _OWNER_FILE).read_text(encoding="ascii").split()
        except (OSError, ValueError):
            continue
        if process_start_time(int(pid)) == start:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    if removed:
        logger.info("removed %d orphaned PostgreSQL cluster directories", len(removed))
    return removed


def _service_identity() -> RunAs | None:
    """The unprivileged identity to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(SERVICE_USER)  # another process may have won the race
        except KeyError as exc:
            raise ServiceStartError(f"cannot create user {SERVICE_USER}: {result.stderr}") from exc
    return RunAs(user=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path("/"))


def _reachable_by(path: Path, who: RunAs) -> bool:
    """True when every directory from ``/`` to ``path`` is searchable by ``who``."""
    for directory in [*reversed(path.parents), path]:
        info = directory.stat()
        if info.st_uid == who.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == who.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


class Postgres(Service):
    """A throwaway PostgreSQL cluster with superuser ``user`` and database ``dbname``.

    ``fsync`` (default on) can be turned off for speed where power-cut durability is not
    under test; commits still reach the OS at commit time, so a killed server loses nothing.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: do not wait for clients to disconnect

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        fsync: bool = True,
        user: str = "derrick",
        dbname: str = "derrick",
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(base_dir, startup_timeout=startup_timeout, stop_timeout=30.0)
        self.fsync = fsync
        self.user = user
        self.dbname = dbname
        self._password = secrets.token_urlsafe(24)
        self._bindir = locate.pg_bindir()
        self._identity = _service_identity()
        self._cluster_dir: Path | None = None
        self._owns_cluster_dir = False
        self.port = 0

    def __repr__(self) -> str:
        return (
            f"<Postgres {self.user}@{self.host}:{self.port or 'unassigned'}/{self.dbname}"
            f" pid={self.pid} dir={self.base_dir}>"
        )

    # ------------------------------------------------------------------ connection info

    @property
    def dsn(self) -> str:
        """libpq connection string, password included: keep it out of logs."""
        self._require_ports()
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        """The same connection string for another database of the cluster."""
        return (
            f"host={self.host} port={self.port} dbname={dbname} user={self.user}"
            f" password={self._password} connect_timeout=5"
        )

    @property
    def cluster_dir(self) -> Path:
        if self._cluster_dir is None:
            self._cluster_dir = self._choose_cluster_dir()
        return self._cluster_dir

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.output_path

    def close(self) -> None:
        super().close()
        if self._owns_cluster_dir and self._cluster_dir is not None:
            shutil.rmtree(self._cluster_dir, ignore_errors=True)

    # ------------------------------------------------------------------ service hooks

    def _choose_cluster_dir(self) -> Path:
        preferred = self.base_dir / "cluster"
        who = self._identity
        if who is None or _reachable_by(self.base_dir, who):
            preferred.mkdir(exist_ok=True)
            return preferred
        # base_dir sits under a private directory (pytest's tmp is 0700 under /tmp/pytest-of-root)
        self._owns_cluster_dir = True
        sweep_orphaned_cluster_dirs()
        outside = Path(tempfile.mkdtemp(prefix=_OUTSIDE_PREFIX))
        os.chmod(outside, 0o711)  # noqa: S103 - search-only, for the service user
        mark = f"{os.getpid()} {process_start_time(os.getpid())}"
        (outside / _OWNER_FILE).write_text(mark, encoding="ascii")
        with contextlib.suppress(FileExistsError):
            preferred.symlink_to(outside)
        return outside

    def _assign_ports(self) -> None:
        self.port = allocate_port()

    def _run_as(self) -> RunAs | None:
        return self._identity

    def _working_dir(self) -> Path:
        return self.cluster_dir

    def _environment(self) -> Mapping[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C"})
        if self._identity is not None:
            env.update({"HOME": str(self._identity.home), "USER": self._identity.user})
        return env

    def _chown(self, path: Path) -> None:
        if self._identity is not None:
            os.chown(path, self._identity.uid, self._identity.gid)

    def _prepare(self) -> None:
        self._chown(self.cluster_dir)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.socket_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        pwfile = self.cluster_dir / "initdb.pw"
        pwfile.touch(mode=0o600)
        self._chown(pwfile)
        pwfile.write_text(self._password + "\n", encoding="utf-8")
        command = [
            str(self._bindir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.user}",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.fsync:
            command.append("--no-sync")
        identity = self._identity
        try:
            with self.output_path.open("ab") as log:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(),
                    cwd=self.cluster_dir,
                    user=identity.uid if identity else None,
                    group=identity.gid if identity else None,
                    extra_groups=[] if identity else None,
                    timeout=120,
                    check=False,
                )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceStartError(f"initdb failed ({result.returncode})\n{self.log_tail()}")

    def _command(self) -> Sequence[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "logging_collector": "off",
            "shared_buffers": "64MB",
            "max_connections": "100",
            "log_line_prefix": "%m [%p] ",
        }
        command = [str(self._bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _is_ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
                conn.execute("select 1")
        except psycopg.OperationalError as exc:
            logger.debug("postgres not ready yet: %s", exc)
            return False
        return True

    def _after_ready(self) -> None:
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (self.dbname,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.dbname)))
