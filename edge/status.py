"""The agent's status file and the ``health`` verdict the fleet playbooks gate on.

The running agent writes ``status.json`` beside its queue every status interval (atomically:
write, fsync, rename). ``derrick-edge health`` reads it and says whether the agent is healthy:
its process runs, the file is fresh, it is born on a broker whose Primary Host is online (or
was, recently), and its acknowledgements keep up.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from edge.config import AgentConfig
from edge.queue import QueueStats


class AgentStatus(msgspec.Struct, frozen=True):
    pid: int
    appliance: str
    version: str
    updated_ms: int
    live: bool
    connected_since_ms: int | None
    last_ack_ms: int | None
    mode: str
    queue: QueueStats


def status_path(queue_path: Path) -> Path:
    return queue_path.with_name("status.json")


def write_status(queue_path: Path, status: AgentStatus) -> None:
    path = status_path(queue_path)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(msgspec.json.encode(status))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_health(cfg: AgentConfig, now_ms: int) -> tuple[bool, list[str]]:
    """(healthy, reasons): reasons say what is wrong, or what is right when healthy."""
    path = status_path(cfg.queue.path)
    try:
        status = msgspec.json.decode(path.read_bytes(), type=AgentStatus)
    except FileNotFoundError:
        return False, [f"no status file at {path}: the agent has not run"]
    except (OSError, msgspec.DecodeError) as exc:
        return False, [f"unreadable status file {path}: {exc}"]
    h = cfg.health
    problems: list[str] = []
    if not _pid_alive(status.pid):
        problems.append(f"agent process {status.pid} is not running")
    age_s = (now_ms - status.updated_ms) / 1000
    if age_s > h.max_status_age_s:
        problems.append(f"status is {age_s:.0f} s old (limit {h.max_status_age_s:.0f} s)")
    if not status.live:
        problems.append("not connected and born (broker or Primary Host unavailable)")
    elif status.queue.oldest_created_ms is not None:
        unacked_s = (now_ms - status.queue.oldest_created_ms) / 1000
        if unacked_s > h.max_unacked_age_s:
            problems.append(
                f"oldest unacknowledged data is {unacked_s:.0f} s old "
                f"(limit {h.max_unacked_age_s:.0f} s)"
            )
    if status.queue.evicted_samples:
        problems.append(f"{status.queue.evicted_samples} samples were evicted (queue full)")
    if problems:
        return False, problems
    return True, [
        f"agent {status.version} pid {status.pid} live, mode {status.mode}, "
        f"{status.queue.samples} samples queued, acked through batch {status.queue.acked_batch}"
    ]
