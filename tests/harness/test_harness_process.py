"""No service outlives the harness: stop, thread exit, SIGTERM, SIGKILL of the parent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness.ports import allocate_ports
from harness.process import ManagedProcess, process_alive


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _sleeper(tmp_path: Path, name: str = "sleeper") -> ManagedProcess:
    sleep = shutil.which("sleep")
    assert sleep is not None
    return ManagedProcess(name, [sleep, "600"], log_path=tmp_path / f"{name}.log")


def test_stop_ends_the_process_group(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    # a shell that forks a grandchild: stop must reach both
    process = ManagedProcess(
        "forker",
        [sh, "-c", f"sleep 600 & echo $! > {tmp_path / 'child.pid'}; wait"],
        log_path=tmp_path / "forker.log",
    )
    process.start()
    deadline = time.monotonic() + 5
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int((tmp_path / "child.pid").read_text())
    assert process.pid is not None and process_alive(grandchild)
    process.stop(timeout=5)
    assert not process.running
    assert _wait_gone(grandchild)


def test_process_started_from_a_short_lived_thread_survives_the_thread(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits; the harness forks from its own
    # long-lived thread so services started from worker threads are not killed early.
    process = _sleeper(tmp_path)
    worker = threading.Thread(target=process.start)
    worker.start()
    worker.join()
    time.sleep(0.5)
    assert process.running
    process.stop(timeout=5)
    assert not process.running


def test_kill_is_immediate(tmp_path: Path) -> None:
    process = _sleeper(tmp_path)
    process.start()
    pid = process.pid
    assert pid is not None
    assert process.kill() == -signal.SIGKILL
    assert not process_alive(pid)


def test_service_start_records_its_output(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    process = ManagedProcess("echo", [sh, "-c", "echo hello-from-child"], log_path=tmp_path / "o")
    process.start()
    deadline = time.monotonic() + 5
    while process.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "hello-from-child" in (tmp_path / "o").read_text()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness import Mosquitto
    broker = Mosquitto(Path(sys.argv[1]))
    broker.start()
    print(broker.pid, flush=True)
    time.sleep(600)
    """
)


def _start_child_with_broker(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "broker")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"child printed {line!r}"
    broker_pid = int(line)
    assert process_alive(broker_pid)
    return child, broker_pid


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_orphan_when_the_python_parent_dies(tmp_path: Path, signum: signal.Signals) -> None:
    child, broker_pid = _start_child_with_broker(tmp_path)
    try:
        os.kill(child.pid, signum)
        child.wait(timeout=15)
        assert _wait_gone(broker_pid, timeout=5), f"mosquitto {broker_pid} outlived its parent"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if process_alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)


def test_ports_are_never_handed_out_twice() -> None:
    ports = allocate_ports(200)
    assert len(set(ports)) == 200
    assert all(1024 < p < 65536 for p in ports)
