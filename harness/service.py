"""What every harness service shares: directories, ports, lifecycle, readiness, logs.

A service owns a base directory (a fresh temporary one unless given). ``start()`` picks free
loopback ports the first time, writes its configuration, starts the server and waits until
it answers; ``stop()`` ends it and keeps its data; ``restart()`` starts it again on the same
ports and data; ``kill()`` ends it with SIGKILL, as a crash would; ``close()`` stops it and
removes the directories the service created itself.
"""

from __future__ import annotations

import abc
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from harness.errors import ServiceNotRunningError, ServiceStartError
from harness.ports import LOOPBACK
from harness.process import ManagedProcess, RunAs

logger = logging.getLogger(__name__)

_PORT_CONFLICT_MARKERS = ("address already in use", "could not bind", "address in use")
_START_ATTEMPTS = 3


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class Service(abc.ABC):
    """Base class of :class:`Mosquitto`, :class:`QuestDB` and :class:`Postgres`."""

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        if base_dir is None:
            self._base_dir = Path(tempfile.mkdtemp(prefix=f"derrick-{self.name}-"))
            self._owns_base_dir = True
        else:
            self._base_dir = Path(base_dir).resolve()
            self._base_dir.mkdir(parents=True, exist_ok=True)
            self._owns_base_dir = False
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.host = LOOPBACK
        self._process: ManagedProcess | None = None
        self._ports_assigned = False

    # ------------------------------------------------------------------ hooks

    @abc.abstractmethod
    def _assign_ports(self) -> None:
        """Choose the service's ports (called before the first start only)."""

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """Write configuration and initialise data before each start (idempotent)."""

    @abc.abstractmethod
    def _command(self) -> Sequence[str]:
        """The server's command line."""

    def _environment(self) -> Mapping[str, str] | None:
        return None

    def _run_as(self) -> RunAs | None:
        return None

    def _working_dir(self) -> Path:
        return self._base_dir

    @abc.abstractmethod
    def _is_ready(self) -> bool:
        """One readiness probe; may raise ``OSError`` while the server is coming up."""

    def _after_ready(self) -> None:  # noqa: B027 - optional hook
        """First-start work that needs the running server (creating a database, ...)."""

    def _log_files(self) -> list[Path]:
        return [self.output_path]

    # ------------------------------------------------------------------ public

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def output_path(self) -> Path:
        """Where the server's stdout and stderr go (appended across restarts)."""
        return self._base_dir / f"{self.name}.out"

    @property
    def log_path(self) -> Path:
        """The service's main log file."""
        return self.output_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def process(self) -> ManagedProcess:
        if self._process is None:
            raise ServiceNotRunningError(f"{self.name} was never started")
        return self._process

    def start(self) -> Self:
        """Start on free ports (the same ones on a restart) and wait until ready."""
        if self.running:
            raise ServiceStartError(f"{self.name} is already running (pid {self.pid})")
        first_start = not self._ports_assigned
        attempts = _START_ATTEMPTS if first_start else 1
        for attempt in range(1, attempts + 1):
            if not self._ports_assigned:
                self._assign_ports()
                self._ports_assigned = True
            try:
                self._launch_and_wait()
            except ServiceStartError:
                if attempt < attempts and self._port_conflict():
                    logger.info("%s: port conflict, retrying on new ports", self.name)
                    self._ports_assigned = False
                    continue
                raise
            break
        if first_start:
            self._after_ready()
        logger.info("%s ready (pid %s) in %s", self.name, self.pid, self._base_dir)
        return self

    def stop(self) -> None:
        """Stop the server gracefully (SIGKILL after ``stop_timeout``); keep its data."""
        if self._process is not None:
            self._process.stop(timeout=self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash or a power cut would."""
        if self._process is not None:
            self._process.kill()

    def restart(self) -> Self:
        """Stop if running, then start again on the same ports and data directory."""
        if not self._ports_assigned:
            raise ServiceNotRunningError(f"{self.name} was never started, nothing to restart")
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the directories this service created itself."""
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self._base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """The ends of the service's log files, for error messages."""
        return "\n".join(f"--- {path}\n{tail(path, lines)}" for path in self._log_files())

    # ------------------------------------------------------------------ internals

    def _require_running(self) -> None:
        if not self.running:
            raise ServiceNotRunningError(f"{self.name} is not running")

    def _require_ports(self) -> None:
        if not self._ports_assigned:
            raise ServiceNotRunningError(f"{self.name} has no ports yet: start() it first")

    def _launch_and_wait(self) -> None:
        self._prepare()
        process = ManagedProcess(
            self.name,
            self._command(),
            log_path=self.output_path,
            env=self._environment(),
            cwd=self._working_dir(),
            run_as=self._run_as(),
            stop_signal=self.stop_signal,
        )
        self._process = process
        process.start()
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            if not process.running:
                raise ServiceStartError(
                    f"{self.name} exited with code {process.returncode} during startup\n"
                    f"{self.log_tail()}"
                )
            try:
                if self._is_ready():
                    return
            except OSError as exc:
                logger.debug("%s not ready yet: %s", self.name, exc)
            if time.monotonic() > deadline:
                process.kill()
                raise ServiceStartError(
                    f"{self.name} not ready after {self.startup_timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _port_conflict(self) -> bool:
        text = "\n".join(tail(path, 200) for path in self._log_files()).lower()
        return any(marker in text for marker in _PORT_CONFLICT_MARKERS)
