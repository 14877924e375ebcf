"""Service processes that never outlive the harness.

A :class:`ManagedProcess` runs one server program:

- in its own session and process group, so a stop reaches every process it forked;
- through ``_launch.py``, which arms ``PR_SET_PDEATHSIG`` (SIGKILL) in the child, so the
  kernel kills it if the Python process dies, even by SIGKILL;
- spawned from one long-lived daemon thread, because the kernel delivers the parent-death
  signal when the *thread* that forked the child exits, and callers may start services from
  short-lived threads;
- recorded in a process-wide registry that stops everything still running at interpreter
  exit and on SIGTERM.

Its stdout and stderr are appended to a log file.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

logger = logging.getLogger(__name__)

_LAUNCHER = Path(__file__).resolve().with_name("_launch.py")


@dataclass(frozen=True)
class RunAs:
    """An unprivileged identity to run a server as (PostgreSQL refuses to run as root)."""

    user: str
    uid: int
    gid: int
    home: Path


_Make = Callable[[], "subprocess.Popen[bytes]"]
_Result = concurrent.futures.Future["subprocess.Popen[bytes]"]


class _Spawner:
    """One daemon thread that forks every service process (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Make, _Result]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, make: _Make) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="harness-process-spawner", daemon=True
                )
                self._thread.start()
        future: _Result = concurrent.futures.Future()
        self._jobs.put((make, future))
        return future.result()

    def _run(self) -> None:
        while True:
            make, future = self._jobs.get()
            try:
                future.set_result(make())
            except BaseException as exc:
                future.set_exception(exc)


class _LiveProcesses:
    """Every :class:`ManagedProcess` still running; stopped at exit and on SIGTERM."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, ManagedProcess] = {}
        self._hooks_installed = False
        self._previous_sigterm: Callable[[int, FrameType | None], object] | int | None = None

    def add(self, process: ManagedProcess) -> None:
        with self._lock:
            self._live[id(process)] = process
            if not self._hooks_installed:
                self._install_hooks()

    def discard(self, process: ManagedProcess) -> None:
        with self._lock:
            self._live.pop(id(process), None)

    def stop_all(self, timeout: float = 5.0) -> None:
        with self._lock:
            processes = list(self._live.values())
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                process.stop(timeout=timeout)

    def _install_hooks(self) -> None:
        self._hooks_installed = True
        atexit.register(self.stop_all)
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):
            self._previous_sigterm = previous
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_all(timeout=3.0)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_spawner = _Spawner()
_live = _LiveProcesses()


class ManagedProcess:
    """One server process, started by :meth:`start` and ended by :meth:`stop` or :meth:`kill`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._run_as = run_as
        self._stop_signal = stop_signal
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} running={self.running}>"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        uid = str(self._run_as.uid) if self._run_as else "-"
        gid = str(self._run_as.gid) if self._run_as else "-"
        command = [sys.executable, "-I", "-S", str(_LAUNCHER), str(os.getpid()), uid, gid, "--"]
        command += self.argv
        with self.log_path.open("ab") as log:
            log.write(f"==== harness: starting {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = _spawner.spawn(lambda: self._popen_in_spawner(command, log))
        _live.add(self)
        logger.debug("%s started, pid %s", self.name, self._popen.pid)

    def _popen_in_spawner(self, command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            close_fds=True,
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """The stop signal (SIGTERM unless told) to the group, SIGKILL after ``timeout`` s."""
        return self._end(self._stop_signal, timeout)

    def kill(self) -> int | None:
        """SIGKILL to the process group, as a crash or power cut would end it."""
        return self._end(signal.SIGKILL, 10.0)

    def send_signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the process group without waiting (SIGSTOP to freeze, ...)."""
        if self.running and self._popen is not None:
            self._signal_group(signum)

    def _end(self, first: signal.Signals, timeout: float) -> int | None:
        popen = self._popen
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                self._signal_group(first)
                if first != signal.SIGKILL:
                    self._signal_group(signal.SIGCONT)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "%s ignored %s for %.0f s, killing it", self.name, first.name, timeout
                    )
                    self._signal_group(signal.SIGKILL)
                    popen.wait(timeout=10.0)
            self._signal_group(signal.SIGKILL)  # stragglers the leader forked
        finally:
            _live.discard(self)
        return popen.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 in a container may not reap)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in {"Z", "X"}


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone: with the
    pid it names one process, even after the pid is reused."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]
