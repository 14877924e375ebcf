"""The switch under an init system: ``derrick_switch_service_manager`` ``systemd`` and ``sysv``
with real ``ansible-playbook`` runs, the real agent, broker, ingest and QuestDB.

There is no init system in the tests, so its command-line tools are stand-ins on ``PATH``
(``stand_ins`` below) that log every call; what they do is kept to what the test needs:

- systemd: ``systemctl`` checks every ``derrick-*`` unit it is asked to enable with the real
  ``systemd-analyze verify`` (an error or a warning fails the call), and starts and stops
  the unit's ``ExecStart`` as a detached process with a pid file, so the agent the unit
  describes is the agent that passes the health gate;
- sysv: ``update-rc.d`` and ``invoke-rc.d`` (the legacy service: its python2.7 program cannot
  run here) only log; Derrick's own LSB scripts in ``/etc/init.d`` run for real
  (``start-stop-daemon``).

Each test converges one appliance (the backlog in QuestDB, the calls in order, the watchdog's
service gone after the commit) and rolls it back with ``fleet-rollback.yml`` (byte for byte,
the agent stopped, its services removed, the legacy service started again).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import sys
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.process import ManagedProcess
from tests.fleet.legacy_fixtures import BACKUP_DIR, tree_digest
from tests.fleet.site import Site, wait_backlogs_stored

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

SYSTEMCTL = r'''#!PYTHON
"""systemctl stand-in: log, verify derrick-* units, run their ExecStart detached."""
import os, shlex, signal, subprocess, sys, time
root, log = os.environ["STAND_IN_ROOT"], os.environ["STAND_IN_LOG"]
args = sys.argv[1:]
with open(log, "a") as f:
    f.write("systemctl " + " ".join(args) + "\n")
now = "--now" in args
verb, units = args[0], [a for a in args[1:] if a.endswith(".service")]
for unit in units:
    name = unit[: -len(".service")]
    if not name.startswith("derrick-"):
        continue
    path = os.path.join(root, "etc/systemd/system", unit)
    pidfile = os.path.join(root, "run", name + ".pid")
    if verb in ("enable", "start"):
        if verb == "enable":
            done = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                                  text=True)
            if done.returncode != 0 or done.stderr.strip():  # a warning is a failure too
                sys.exit(f"systemd-analyze verify {path}: {done.stderr}")
        if verb == "start" or now:
            line = next(l for l in open(path) if l.startswith("ExecStart="))
            argv = shlex.split(line[len("ExecStart="):])
            with open(os.path.join(os.path.dirname(log), name + ".log"), "ab") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True)
            with open(pidfile, "w") as f:
                f.write(f"{proc.pid}\n")
    elif verb in ("stop", "disable") and (verb == "stop" or now):
        try:
            pid = int(open(pidfile).read())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        else:
            os.kill(pid, signal.SIGKILL)
        if os.path.exists(pidfile):
            os.remove(pidfile)
'''

LOGGING_ONLY = """#!/bin/sh
echo "NAME $*" >>"$STAND_IN_LOG"
"""


def stand_ins(directory: Path, root: Path) -> tuple[dict[str, str], Path]:
    """``systemctl``, ``update-rc.d`` and ``invoke-rc.d`` stand-ins -> (env, call log)."""
    directory.mkdir()
    log = directory / "calls.log"
    log.touch()
    (directory / "systemctl").write_text(SYSTEMCTL.replace("PYTHON", sys.executable))
    for name in ("update-rc.d", "invoke-rc.d"):
        (directory / name).write_text(LOGGING_ONLY.replace("NAME", name))
    for tool in directory.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{directory}:{os.environ['PATH']}", "STAND_IN_ROOT": str(root),
           "STAND_IN_LOG": str(log)}  # fmt: skip
    return env, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def alive(pidfile: Path) -> bool:
    try:
        return running(int(pidfile.read_text()))
    except (FileNotFoundError, ValueError):
        return False


EXPECTED = {
    "systemd": (
        "v2.0",
        [
            "systemctl disable --now cdd-agent.service",
            "systemctl daemon-reload",
            "systemctl enable --now derrick-edge.service derrick-switch-watchdog.service",
            "systemctl disable derrick-switch-watchdog.service",  # commit
            "systemctl daemon-reload",
        ],
        [
            "systemctl disable --now derrick-edge.service",
            "systemctl daemon-reload",
            "systemctl enable --now cdd-agent.service",
        ],
        ("etc/systemd/system/derrick-edge.service", "etc/systemd/system/"
         "derrick-switch-watchdog.service"),
    ),
    "sysv": (
        "v1.4",
        [
            "invoke-rc.d cdd-collector stop",
            "update-rc.d cdd-collector disable",
            "update-rc.d derrick-edge defaults",
            "update-rc.d derrick-switch-watchdog defaults",
            "update-rc.d -f derrick-switch-watchdog remove",  # commit
        ],
        [
            "update-rc.d -f derrick-edge remove",
            "invoke-rc.d cdd-collector start",
            "update-rc.d cdd-collector enable",
        ],
        ("etc/init.d/derrick-edge", "etc/init.d/derrick-switch-watchdog"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("manager", sorted(EXPECTED))
def test_switch_under_an_init_system_converges_and_rolls_back(
    tmp_path: Path,
    manager: str,
    mosquitto: Mosquitto,
    questdb: QuestDB,
    ingest: tuple[ManagedProcess, str],
) -> None:
    assert shutil.which("systemd-analyze") and shutil.which("start-stop-daemon")
    _, table = ingest
    version, converge_calls, rollback_calls, (agent_service, watchdog_service) = EXPECTED[manager]
    site = Site(tmp_path / "site")
    host = site.add(1, version, seed=7)
    root = site.root(host)
    site.host_vars[host] = {"derrick_switch_service_manager": manager}
    env, log = stand_ins(tmp_path / "bin", root)
    before = tree_digest(root)
    inventory = site.inventory(mosquitto.port)
    try:
        run = site.play(inventory, env_extra=env)
        assert run.returncode == 0, run.stdout[-6000:]
        assert site.report(host)["outcome"] == "converged"
        assert calls(log) == converge_calls, run.stdout[-3000:]
        wait_backlogs_stored(site, questdb, table, [host])
        # the agent runs from its service; the trial's watchdog service went with the commit
        assert (root / agent_service).exists() and not (root / watchdog_service).exists()
        assert alive(root / "run/derrick-edge.pid")
        agent_pid = int((root / "run/derrick-edge.pid").read_text())
        if manager == "sysv":
            script = (root / agent_service).read_text()
            assert "# Provides:          derrick-edge" in script
            assert '--pidfile "$PIDFILE"' in script
            status = shlex.join([str(root / agent_service), "status"])
            assert os.system(status) == 0
        switch = json.loads((root / "etc/derrick/switch.json").read_text())
        assert switch["manager"] == manager

        back = site.play(inventory, "fleet-rollback.yml", env_extra=env)
        assert back.returncode == 0, back.stdout[-4000:]
        assert calls(log) == converge_calls + rollback_calls
        assert tree_digest(root, exclude=(BACKUP_DIR,)) == {
            k: v for k, v in before.items() if not k.startswith(BACKUP_DIR)
        }
        assert not running(agent_pid)
    finally:
        site.stop_agents()
        for pidfile in (root / "run").glob("derrick-*.pid"):
            if alive(pidfile):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
