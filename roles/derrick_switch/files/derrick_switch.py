"""``derrick-switch``: the appliance-side switch from the legacy service to the Derrick agent.

Runs on the release bundle's Python, next to ``derrick_legacy.py`` (installed together in
``/opt/derrick/libexec``), and needs no controller once started, so a controller that loses
the appliance mid-switch still leaves it safe:

- ``trial [--settings JSON]``: write the switch settings when given (one step fewer for the
  controller), stop and disable the legacy service, start the agent, write ``state=trial``
  with a deadline and start a detached watchdog;
- ``gate [--commit]``: exit 0 when ``derrick-edge health`` says healthy and everything queued
  before the switch (the imported legacy backlog) has been acknowledged, else 1 with the
  reasons; with ``--commit`` a passing gate commits at once (the controller's confirmation,
  without a second health check in a second process);
- ``commit``: the controller confirms (``state=committed``) after its own health check; the
  watchdog then exits;
- ``rollback``: stop the agent, keep what its queue still holds unacknowledged (a copy of the
  queue next to the backup, reported: nothing the agent read is lost), restore the legacy
  installation and data byte for byte from the backup, remove the new release, start the
  legacy service;
- ``watchdog``: wait for the deadline; still in trial -> ``rollback``.

Each prints one JSON object (``changed``, ``state``, ``msg``). Settings: ``/etc/derrick/
switch.json`` (service manager ``systemd``, ``sysv`` or ``process``, the latter for tests
without an init system: the agent runs as a detached process with a pid file).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import derrick_legacy as legacy

SETTINGS = "etc/derrick/switch.json"
PIDFILE = "run/derrick-edge.pid"
ROLLBACK_RECORD = "last-rollback.json"


def _path(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def _load(root: str, rel: str) -> dict[str, Any] | None:
    try:
        with open(_path(root, rel), encoding="utf-8") as f:
            doc: dict[str, Any] = json.load(f)
            return doc
    except FileNotFoundError:
        return None


def _save(root: str, rel: str, doc: dict[str, Any]) -> None:
    path = _path(root, rel)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, timeout=120, stdin=subprocess.DEVNULL)


def _legacy_service(settings: dict[str, Any], action: str) -> None:
    manager, name = settings["legacy_service"]["manager"], settings["legacy_service"]["name"]
    if settings["manager"] == "process":
        return  # tests: no legacy process runs (documented in docs/fleet.md)
    if manager == "systemd":
        verb = {"stop": ["disable", "--now"], "start": ["enable", "--now"]}[action]
        _run(["systemctl", *verb, f"{name}.service"])
    else:
        _run([f"/etc/init.d/{name}", action])
        _run(["update-rc.d", name, "disable" if action == "stop" else "enable"])


def _agent_pid(root: str) -> int | None:
    try:
        with open(_path(root, PIDFILE), encoding="utf-8") as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _agent(root: str, settings: dict[str, Any], action: str) -> None:
    if settings["manager"] == "systemd":
        verb = {"stop": ["stop"], "start": ["start"], "enable": ["enable"]}[action]
        _run(["systemctl", *verb, "derrick-edge.service"])
        return
    if settings["manager"] == "sysv":
        if action == "enable":
            _run(["update-rc.d", "derrick-edge", "defaults"])
        else:
            _run(["/etc/init.d/derrick-edge", action])
        return
    pid = _agent_pid(root)
    if action == "start" and pid is None:
        os.makedirs(_path(root, "var/log/derrick"), exist_ok=True)
        with open(_path(root, "var/log/derrick/agent.log"), "ab") as log:
            proc = subprocess.Popen(
                [*settings["agent_command"], "run", "--config", _path(root, legacy.AGENT_CONFIG)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        with open(_path(root, PIDFILE), "w", encoding="utf-8") as f:
            f.write(f"{proc.pid}\n")
    elif action == "stop" and pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _agent_pid(root) is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


def write_settings(root: str, settings: dict[str, Any]) -> bool:
    """Write ``switch.json`` unless it already says the same -> whether it changed."""
    for key in ("manager", "legacy_service", "agent_command"):
        if key not in settings:
            raise SystemExit(f"--settings: {key!r} missing")
    if _load(root, SETTINGS) == settings:
        return False
    _save(root, SETTINGS, settings)
    return True


def trial(root: str, timeout_s: float, new_settings: dict[str, Any] | None) -> dict[str, Any]:
    wrote = new_settings is not None and write_settings(root, new_settings)
    settings = _load(root, SETTINGS)
    state = legacy.agent_state(root)
    if settings is None or state is None:
        raise SystemExit("not staged: run the migration first")
    if state["state"] == "committed":
        return {"changed": wrote, "state": "committed", "msg": "already committed"}
    if state["state"] == "trial":
        if settings["manager"] == "process" and _agent_pid(root) is None:
            _agent(root, settings, "start")
            return {"changed": True, "state": "trial", "msg": "agent restarted"}
        return {"changed": wrote, "state": "trial", "msg": "trial running"}
    _legacy_service(settings, "stop")
    state.update(state="trial", trial_started_ms=int(time.time() * 1000),
                 deadline=time.time() + timeout_s)  # fmt: skip
    _save(root, legacy.STATE_FILE, state)
    _agent(root, settings, "start")
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--root", root, "watchdog"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    return {"changed": True, "state": "trial", "msg": f"agent started, reverts in {timeout_s}s"}


def gate(root: str) -> tuple[bool, list[str]]:
    settings = _load(root, SETTINGS) or {}
    state = legacy.agent_state(root) or {}
    done = subprocess.run(
        [*settings["agent_command"], "health", "--config", _path(root, legacy.AGENT_CONFIG)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    reasons = done.stdout.strip().splitlines() or [done.stderr.strip()]
    if done.returncode != 0:
        return False, reasons
    status = _load(root, "var/lib/derrick/status.json") or {}
    oldest = (status.get("queue") or {}).get("oldest_created_ms")
    started = state.get("trial_started_ms", 0)
    if oldest is not None and oldest < started:
        return False, [*reasons, "legacy backlog not yet acknowledged (queue draining)"]
    return True, reasons


def commit(root: str, gate_passed: bool = False) -> dict[str, Any]:
    state = legacy.agent_state(root)
    if state is None or state["state"] not in ("trial", "committed"):
        raise SystemExit(f"nothing to commit (state {state and state['state']})")
    if state["state"] == "committed":
        return {"changed": False, "state": "committed", "msg": "already committed"}
    if not gate_passed:
        ok, reasons = gate(root)
        if not ok:
            raise SystemExit("refusing to commit an unhealthy agent: " + "; ".join(reasons))
    settings = _load(root, SETTINGS) or {}
    if settings.get("manager") != "process":
        _agent(root, settings, "enable")
    state.update(state="committed", committed_at=time.time())
    _save(root, legacy.STATE_FILE, state)
    return {"changed": True, "state": "committed", "msg": "committed"}


def keep_unacknowledged(root: str, keep_dir: str) -> dict[str, Any] | None:
    """Copy the stopped agent's queue into ``keep_dir`` when it still holds batches the Primary
    Host has not acknowledged (they would go with the release) -> what was kept, or None."""
    path = _path(root, legacy.QUEUE_FILE)
    if not os.path.exists(path):
        return None
    src = sqlite3.connect(path)
    try:
        batches, samples = src.execute(
            "SELECT count(*), coalesce(sum(samples), 0) FROM batch"
        ).fetchone()
        if not batches:
            return None
        dest = os.path.join(keep_dir, f"unacknowledged-{int(time.time() * 1000)}.db")
        dst = sqlite3.connect(dest + ".tmp")
        try:
            src.backup(dst)
        finally:
            dst.close()
        os.replace(dest + ".tmp", dest)
    finally:
        src.close()
    return {"batches": batches, "samples": samples, "file": dest}


def rollback(root: str, reason: str) -> dict[str, Any]:
    state = legacy.agent_state(root)
    settings = _load(root, SETTINGS)
    if state is None:
        return {"changed": False, "state": None, "msg": "nothing to roll back"}
    if settings is not None:
        _agent(root, settings, "stop")
    keep_dir = os.path.dirname(state["backup"])
    kept = keep_unacknowledged(root, keep_dir)
    legacy.restore_backup(root, state["backup"])
    record = {"reason": reason, "at": time.time(), "from_state": state["state"], "kept": kept}
    with open(os.path.join(keep_dir, ROLLBACK_RECORD), "w") as f:
        json.dump(record, f)
    if settings is not None:
        _legacy_service(settings, "start")
    msg = reason
    if kept:
        msg += (f"; {kept['samples']} readings in {kept['batches']} batches the Primary Host had"
                f" not acknowledged are kept in {kept['file']}")  # fmt: skip
    return {"changed": True, "state": "rolled_back", "from_state": state["state"],
            "kept": kept, "msg": msg}  # fmt: skip


def watchdog(root: str) -> dict[str, Any]:
    while True:
        state = legacy.agent_state(root)
        if state is None or state["state"] != "trial":
            return {"changed": False, "state": state and state["state"], "msg": "confirmed"}
        if time.time() >= state["deadline"]:
            return rollback(root, "trial deadline passed without the controller's commit")
        time.sleep(min(1.0, max(0.0, state["deadline"] - time.time())))


def main() -> int:
    parser = argparse.ArgumentParser(prog="derrick-switch")
    parser.add_argument("--root", default="/")
    sub = parser.add_subparsers(dest="command", required=True)
    trial_cmd = sub.add_parser("trial")
    trial_cmd.add_argument("--timeout", type=float, default=900)
    trial_cmd.add_argument("--settings", type=json.loads, default=None,
                           help="switch.json content to write first (JSON)")  # fmt: skip
    sub.add_parser("gate").add_argument("--commit", action="store_true")
    for name in ("commit", "watchdog"):
        sub.add_parser(name)
    sub.add_parser("rollback").add_argument("--reason", default="requested")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    if args.command == "gate":
        ok, reasons = gate(root)
        result = {"changed": False, "healthy": ok, "reasons": reasons}
        if ok and args.commit:
            result.update(commit(root, gate_passed=True), healthy=True, reasons=reasons)
        print(json.dumps(result))
        return 0 if ok else 1
    if args.command == "trial":
        result = trial(root, args.timeout, args.settings)
    elif args.command == "commit":
        result = commit(root)
    elif args.command == "rollback":
        result = rollback(root, args.reason)
    else:
        result = watchdog(root)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
