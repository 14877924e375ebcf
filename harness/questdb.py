"""A QuestDB server from the pinned jar, on free loopback ports.

Settings go in as ``QDB_*`` environment variables (QuestDB's documented override of
``server.conf`` keys), so the generated ``conf/server.conf`` is never edited.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from harness import locate
from harness.errors import QueryError
from harness.ports import allocate_port, is_listening
from harness.service import Service

CommitMode = Literal["sync", "async", "nosync"]

# Module options every QuestDB 9.x needs on Java 17+ (from the official launch script).
_JAVA_MODULE_OPTIONS = (
    "--add-opens=java.base/java.lang=io.questdb",
    "--add-opens=java.base/java.lang.reflect=io.questdb",
    "--add-opens=java.base/java.nio=io.questdb",
    "--add-opens=java.base/java.time.zone=io.questdb",
    "--add-exports=java.base/jdk.internal.math=io.questdb",
)
_JAVA_NATIVE_ACCESS = 22  # restricted-method warnings start here
_JAVA_UNSAFE_FLAG = 23  # --sun-misc-unsafe-memory-access exists from here


# QuestDB's recipe for many small tables ("Optimize disk and memory usage with many tables"):
# a table writer reserves every column and symbol-index file one append page at a time
# (16 MiB by default, fallocated) and keeps it while the writer stays open. A test session
# creates hundreds of small tables and views on one server: at the defaults it held ~38 GB
# of reserved, mostly empty pages at its peak. Benchmarks keep the defaults.
SMALL_TABLES: Mapping[str, str] = {
    "cairo.o3.column.memory.size": "128K",
    "cairo.system.writer.data.append.page.size": "128K",
    "cairo.writer.data.append.page.size": "128K",
    "cairo.writer.data.index.key.append.page.size": "128K",
    "cairo.writer.data.index.value.append.page.size": "128K",
    "cairo.wal.writer.data.append.page.size": "128K",
}


def _setting_env_name(key: str) -> str:
    """``cairo.commit.mode`` -> ``QDB_CAIRO_COMMIT_MODE``."""
    return "QDB_" + key.upper().replace(".", "_").replace("-", "_")


class QuestDB(Service):
    """A throwaway QuestDB server.

    ``commit_mode`` defaults to ``sync`` (commits survive a power cut, as Derrick requires);
    ``settings`` adds or overrides any ``server.conf`` key.
    """

    name = "questdb"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        commit_mode: CommitMode = "sync",
        auto_create_tables: bool = True,
        heap: str = "512m",
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        super().__init__(base_dir, startup_timeout=startup_timeout, stop_timeout=30.0)
        self.commit_mode = commit_mode
        self.auto_create_tables = auto_create_tables
        self.heap = heap
        self.settings = dict(settings or {})
        self._java = locate.java_binary(17)
        self._jar = locate.questdb_jar()
        self.http_port = 0
        self.http_min_port = 0
        self.pg_port = 0
        self.ilp_tcp_port = 0

    def __repr__(self) -> str:
        return (
            f"<QuestDB http={self.host}:{self.http_port or 'unassigned'} pg={self.pg_port or '-'}"
            f" pid={self.pid} dir={self.base_dir}>"
        )

    # ------------------------------------------------------------------ connection info

    @property
    def root(self) -> Path:
        """QuestDB's root directory (``db/``, ``conf/``, ``log/``)."""
        return self.base_dir / "root"

    @property
    def http_url(self) -> str:
        self._require_ports()
        return f"http://{self.host}:{self.http_port}"

    @property
    def ilp_conf(self) -> str:
        """A ``questdb`` client configuration string for ILP over HTTP."""
        self._require_ports()
        return f"http::addr={self.host}:{self.http_port};"

    @property
    def pg_dsn(self) -> str:
        """PGWire connection string (QuestDB's built-in default credentials)."""
        self._require_ports()
        return f"postgresql://admin:quest@{self.host}:{self.pg_port}/qdb"

    def exec_sql(self, sql: str, timeout: float = 30.0) -> dict[str, Any]:
        """Run ``sql`` through the HTTP ``/exec`` endpoint and return the decoded JSON."""
        self._require_ports()
        url = f"{self.http_url}/exec?" + urllib.parse.urlencode({"query": sql})
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise QueryError(f"QuestDB rejected {sql!r}: {detail}") from exc
        if "error" in body:
            raise QueryError(f"QuestDB rejected {sql!r}: {body['error']}")
        return body

    # ------------------------------------------------------------------ service hooks

    def _assign_ports(self) -> None:
        self.http_port = allocate_port()
        self.http_min_port = allocate_port()
        self.pg_port = allocate_port()
        self.ilp_tcp_port = allocate_port()

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "tmp").mkdir(exist_ok=True)

    def _command(self) -> Sequence[str]:
        java_version = locate.java_feature_version(self._java)
        options = [f"-Xms{self.heap}", f"-Xmx{self.heap}", *_JAVA_MODULE_OPTIONS]
        if java_version >= _JAVA_NATIVE_ACCESS:
            options.append("--enable-native-access=io.questdb")
        if java_version >= _JAVA_UNSAFE_FLAG:
            options.append("--sun-misc-unsafe-memory-access=allow")
        return [
            str(self._java),
            *options,
            f"-Djava.io.tmpdir={self.base_dir / 'tmp'}",
            "-Dcontainerized=false",
            "-XX:+UseParallelGC",
            "-p",
            str(self._jar),
            "-m",
            "io.questdb/io.questdb.ServerMain",
            "-d",
            str(self.root),
        ]

    def _server_settings(self) -> dict[str, str]:
        host = self.host
        settings = {
            "http.net.bind.to": f"{host}:{self.http_port}",
            "http.min.net.bind.to": f"{host}:{self.http_min_port}",
            "pg.net.bind.to": f"{host}:{self.pg_port}",
            "line.tcp.net.bind.to": f"{host}:{self.ilp_tcp_port}",
            "line.udp.enabled": "false",
            "telemetry.enabled": "false",
            "shared.network.worker.count": "2",
            "shared.query.worker.count": "2",
            "shared.write.worker.count": "2",
            "http.min.worker.count": "1",
            "cairo.commit.mode": self.commit_mode,
            "line.auto.create.new.tables": "true" if self.auto_create_tables else "false",
            "metrics.enabled": "true",
        }
        settings.update(self.settings)
        return settings

    def _environment(self) -> Mapping[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QDB_")}
        env.update({_setting_env_name(k): v for k, v in self._server_settings().items()})
        return env

    def _is_ready(self) -> bool:
        min_url = f"http://{self.host}:{self.http_min_port}/"
        try:
            with urllib.request.urlopen(min_url, timeout=2.0) as response:
                if response.status != 200:
                    return False
        except urllib.error.HTTPError:
            return False
        self.exec_sql("select 1", timeout=5.0)
        return is_listening(self.pg_port) and is_listening(self.ilp_tcp_port)
