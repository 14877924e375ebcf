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

Init systems. ``trial`` installs two services: the agent (``derrick-edge``) and the trial's
watchdog (``derrick-switch-watchdog``), both enabled, so a power cut during the trial boots
into the agent again and the watchdog still reverts at the deadline. systemd: units in
``/etc/systemd/system`` (``systemctl daemon-reload``, ``enable --now``); sysv (Ubuntu 16.04's
Debian tools): LSB scripts in ``/etc/init.d`` linked by ``update-rc.d``, the daemons started
by ``start-stop-daemon`` with pid files in ``/run``; the legacy service through
``invoke-rc.d``.
``commit`` removes the watchdog service; ``rollback`` disables and stops the agent, removes
both services with the release (never stopping the watchdog, which may be the caller) and
restarts the legacy service. ``commit`` and ``rollback`` hold a lock (``switch.lock`` next to the
backup) so a controller's rollback and the watchdog's deadline cannot overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import derrick_legacy as legacy

SETTINGS = "etc/derrick/switch.json"
PIDFILE = "run/derrick-edge.pid"
ROLLBACK_RECORD = "last-rollback.json"
LOCK = "switch.lock"
AGENT, WATCHDOG = "derrick-edge", "derrick-switch-watchdog"
UNIT_DIR, INIT_DIR = "etc/systemd/system", "etc/init.d"


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


def _run(cmd: list[str], check: bool = True) -> bool:
    """Run ``cmd``; with ``check=False`` a failure is reported on stderr, not raised (rollback
    goes on: restoring the old installation matters more than stopping a service cleanly)."""
    try:
        subprocess.run(cmd, check=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        if check:
            raise
        print(f"derrick-switch: {' '.join(cmd)}: {exc}", file=sys.stderr)
        return False
    return True


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    """Hold the switch lock: next to the migration's backup (outside everything a rollback
    restores or removes; nothing to lock before a migration)."""
    state = legacy.agent_state(root)
    if state is None or not state.get("backup"):
        yield
        return
    with open(os.path.join(os.path.dirname(state["backup"]), LOCK), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _legacy_service(settings: dict[str, Any], action: str) -> None:
    manager, name = settings["legacy_service"]["manager"], settings["legacy_service"]["name"]
    if settings["manager"] == "process":
        return  # tests: no legacy process runs (documented in docs/fleet.md)
    check = action == "stop"  # the switch must not go on with the legacy service running
    if manager == "systemd":
        verb = {"stop": ["disable", "--now"], "start": ["enable", "--now"]}[action]
        _run(["systemctl", *verb, f"{name}.service"], check)
    else:
        _run(["invoke-rc.d", name, action], check)
        _run(["update-rc.d", name, "disable" if action == "stop" else "enable"], check)


def _plain(path: str) -> str:
    if not path or any(c.isspace() or c in "\"'\\$%;" for c in path):
        raise SystemExit(f"path {path!r} cannot go into a service definition")
    return path


def agent_argv(root: str, settings: dict[str, Any]) -> list[str]:
    return [*settings["agent_command"], "run", "--config", _path(root, legacy.AGENT_CONFIG)]


def watchdog_argv(root: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--root", root, "watchdog"]


def systemd_unit(description: str, argv: list[str], restart: str, after: str) -> str:
    return (
        f"# Written by derrick-switch (the Derrick release); removed on rollback.\n"
        f"[Unit]\nDescription={description}\nAfter={after}\nWants={after}\n\n"
        f"[Service]\nType=simple\nExecStart={' '.join(_plain(a) for a in argv)}\n"
        f"Restart={restart}\nRestartSec=5\nTimeoutStopSec=30\n\n"
        f"[Install]\nWantedBy=multi-user.target\n"
    )


def sysv_script(name: str, description: str, argv: list[str], root: str) -> str:
    """An LSB init script: ``start-stop-daemon`` with a pid file, output to the agent's log."""
    pidfile = _plain(_path(root, f"run/{name}.pid"))
    log = _plain(_path(root, f"var/log/derrick/{name}.log"))
    command = " ".join(_plain(a) for a in argv)
    return f"""#!/bin/sh
# Written by derrick-switch (the Derrick release); removed on rollback.
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $network $remote_fs $syslog
# Required-Stop:     $network $remote_fs $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: {description}
### END INIT INFO
PIDFILE={pidfile}
case "$1" in
    start)
        mkdir -p "$(dirname {log})"
        start-stop-daemon --start --quiet --oknodo --background --make-pidfile \\
            --pidfile "$PIDFILE" --startas /bin/sh -- -c "exec {command} >>{log} 2>&1"
        ;;
    stop)
        start-stop-daemon --stop --quiet --oknodo --retry TERM/30/KILL/5 --pidfile "$PIDFILE"
        rm -f "$PIDFILE"
        ;;
    restart|force-reload)
        "$0" stop && "$0" start
        ;;
    status)
        start-stop-daemon --status --pidfile "$PIDFILE"
        ;;
    *)
        echo "usage: $0 start|stop|restart|force-reload|status" >&2
        exit 3
        ;;
esac
"""


def install_services(root: str, settings: dict[str, Any]) -> None:
    """The agent's and the watchdog's services, enabled and started (systemd or sysv)."""
    services = [
        (AGENT, "Derrick edge agent", agent_argv(root, settings), "always",
         "network-online.target"),
        (WATCHDOG, "Derrick switch: revert to the legacy software unless committed",
         watchdog_argv(root), "on-failure", "local-fs.target"),
    ]  # fmt: skip
    if settings["manager"] == "systemd":
        for name, description, argv, restart, after in services:
            unit = systemd_unit(description, argv, restart, after)
            legacy.write_atomic(_path(root, f"{UNIT_DIR}/{name}.service"), unit, 0o644)
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "enable", "--now", f"{AGENT}.service", f"{WATCHDOG}.service"])
        return
    for name, description, argv, _, _ in services:
        script = _path(root, f"{INIT_DIR}/{name}")
        legacy.write_atomic(script, sysv_script(name, description, argv, root), 0o755)
        _run(["update-rc.d", name, "defaults"])
        _run([script, "start"])


def remove_watchdog(root: str, settings: dict[str, Any], check: bool) -> None:
    """Unlink the watchdog's service (never stopping it: it may be the caller; it exits by
    itself once the trial is over)."""
    if settings["manager"] == "systemd":
        unit = _path(root, f"{UNIT_DIR}/{WATCHDOG}.service")
        if os.path.exists(unit):
            _run(["systemctl", "disable", f"{WATCHDOG}.service"], check)
            os.remove(unit)
            _run(["systemctl", "daemon-reload"], check)
    elif settings["manager"] == "sysv":
        script = _path(root, f"{INIT_DIR}/{WATCHDOG}")
        if os.path.exists(script):
            os.remove(script)
            _run(["update-rc.d", "-f", WATCHDOG, "remove"], check)


def _agent_pid(root: str) -> int | None:
    try:
        with open(_path(root, PIDFILE), encoding="utf-8") as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _agent_stop(root: str, settings: dict[str, Any]) -> None:
    """Stop and disable the agent's service (rollback: failures reported, not raised)."""
    if settings["manager"] == "systemd":
        _run(["systemctl", "disable", "--now", f"{AGENT}.service"], check=False)
    elif settings["manager"] == "sysv":
        _run([_path(root, f"{INIT_DIR}/{AGENT}"), "stop"], check=False)
        _run(["update-rc.d", "-f", AGENT, "remove"], check=False)
    else:
        _agent(root, settings, "stop")


def _agent(root: str, settings: dict[str, Any], action: str) -> None:
    """The ``process`` manager (tests without an init system): a detached agent + pid file."""
    pid = _agent_pid(root)
    if action == "start" and pid is None:
        os.makedirs(_path(root, "var/log/derrick"), exist_ok=True)
        with open(_path(root, "var/log/derrick/agent.log"), "ab") as log:
            proc = subprocess.Popen(
                agent_argv(root, settings),
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
    if settings["manager"] != "process":
        install_services(root, settings)
        return {"changed": True, "state": "trial", "msg": f"agent started, reverts in {timeout_s}s"}
    _agent(root, settings, "start")
    subprocess.Popen(
        watchdog_argv(root),
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
    with _locked(root):
        return _commit(root, gate_passed)


def _commit(root: str, gate_passed: bool) -> dict[str, Any]:
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
    state.update(state="committed", committed_at=time.time())
    _save(root, legacy.STATE_FILE, state)
    remove_watchdog(root, settings or {"manager": "process"}, check=True)
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
    with _locked(root):
        return _rollback(root, reason)


def _rollback(root: str, reason: str) -> dict[str, Any]:
    state = legacy.agent_state(root)
    settings = _load(root, SETTINGS)
    if state is None:
        return {"changed": False, "state": None, "msg": "nothing to roll back"}
    if settings is not None:
        _agent_stop(root, settings)
        remove_watchdog(root, settings, check=False)
    keep_dir = os.path.dirname(state["backup"])
    kept = keep_unacknowledged(root, keep_dir)
    legacy.restore_backup(root, state["backup"])
    if settings is not None and settings["manager"] == "systemd":
        _run(["systemctl", "daemon-reload"], check=False)  # the agent's unit went with it
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
