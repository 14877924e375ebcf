"""Mosquitto, QuestDB and PostgreSQL together, started concurrently, stopped in reverse."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.errors import HarnessError, ServiceStartError
from harness.mosquitto import Mosquitto
from harness.postgres import Postgres
from harness.questdb import CommitMode, QuestDB
from harness.service import Service

logger = logging.getLogger(__name__)


class ServiceStack:
    """The three backing services of Derrick in one base directory."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        questdb_commit_mode: CommitMode = "sync",
        postgres_fsync: bool = True,
    ) -> None:
        def sub(name: str) -> Path | None:
            return None if base_dir is None else Path(base_dir) / name

        self.mosquitto = Mosquitto(sub("mosquitto"))
        self.questdb = QuestDB(sub("questdb"), commit_mode=questdb_commit_mode)
        self.postgres = Postgres(sub("postgres"), fsync=postgres_fsync)

    def __repr__(self) -> str:
        return f"<ServiceStack {self.mosquitto!r} {self.questdb!r} {self.postgres!r}>"

    @property
    def services(self) -> tuple[Service, ...]:
        """In start order."""
        return (self.mosquitto, self.questdb, self.postgres)

    def start(self) -> Self:
        """Start all services concurrently; on any failure stop them all and raise."""
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="harness-start") as pool:
            futures = [(svc, pool.submit(svc.start)) for svc in self.services]
            failures = [(svc, f.exception()) for svc, f in futures if f.exception() is not None]
        if failures:
            self._stop_quietly()
            message = "; ".join(f"{svc.name}: {exc}" for svc, exc in failures)
            raise ServiceStartError(message) from failures[0][1]
        return self

    def stop(self) -> None:
        """Stop every service in reverse order, even if some fail; then raise the first error."""
        errors: list[BaseException] = []
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:
                logger.warning("stopping %s failed: %s", service.name, exc)
                errors.append(exc)
        if errors:
            raise HarnessError(f"{len(errors)} service(s) failed to stop") from errors[0]

    def close(self) -> None:
        """Stop everything and remove the directories the services created."""
        try:
            self.stop()
        finally:
            for service in reversed(self.services):
                service.close()

    def _stop_quietly(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:
                logger.warning("stopping %s after a failed start failed: %s", service.name, exc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
