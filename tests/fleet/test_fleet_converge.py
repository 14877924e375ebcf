"""``fleet-converge.yml`` and ``fleet-rollback.yml`` on simulated sites: real
``ansible-playbook``, real agents against a real Mosquitto, ingest and QuestDB.

- A 25-appliance site (every legacy version twice, plus each anomaly): check mode changes
  nothing and shows the agent configuration; every upgradable appliance converges and its unsent
  legacy readings land in QuestDB with their original timestamps and engineering values;
  anomalies are reported and left byte for byte untouched; a second run changes nothing.
- A canary whose agent never becomes healthy is rolled back byte for byte, data included, and
  the wave stops before the rest of the site.
- A run killed mid-wave finishes when run again (every reading stored exactly once); then
  ``fleet-rollback.yml`` puts every appliance back byte for byte, and a second rollback run
  finds nothing to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.ports import allocate_port
from harness.process import ManagedProcess
from tests.fleet.legacy_fixtures import ANOMALIES, BACKUP_DIR, VERSIONS, tree_digest
from tests.fleet.site import ANSIBLE_BIN, REPO, Site, births, recap, wait_backlogs_stored

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def state(site: Site, host: str) -> str | None:
    try:
        doc = json.loads((site.root(host) / "var/lib/derrick/state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not staged yet, or being written
        return None
    return str(doc["state"])


def test_site_converges_anomalies_untouched_check_mode_and_rerun_change_nothing(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, ingest: tuple[ManagedProcess, str]
) -> None:
    _, table = ingest
    site = Site(tmp_path / "site")
    hosts = [site.add(1 + i, VERSIONS[i % 10], seed=1 + i // 10) for i in range(20)]
    anomalous = {
        "aborted-upgrade": site.add(21, "v2.3", anomaly="aborted-upgrade"),
        "no-marker": site.add(22, "v3.1", anomaly="no-marker"),
        "invalid-config": site.add(23, "v1.4", anomaly="invalid-config"),
        "disk-full": site.add(24, "v3.2", anomaly="disk-full"),
        "unreachable": site.add(25, "v4.0", anomaly="unreachable"),
    }
    assert set(anomalous) == set(ANOMALIES)
    hosts += list(anomalous.values())
    full = site.root(anomalous["disk-full"]) / BACKUP_DIR  # a small tmpfs: no room for a backup
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(full)],
                   check=True)  # fmt: skip
    before = {h: tree_digest(site.root(h)) for h in hosts}
    converging = [h for h in hosts if site.appliances[h].converge]
    inventory = site.inventory(mosquitto.port)
    try:
        check = site.play(inventory, "fleet-converge.yml", "--check", "--diff")
        assert check.returncode == 0, check.stdout[-6000:]
        assert {h: tree_digest(site.root(h)) for h in hosts} == before  # nothing changed
        for host in converging:  # the diff shows each appliance's agent configuration
            assert f'+appliance = "{host}"' in check.stdout, host

        first = site.play(inventory)
        assert first.returncode == 0, first.stdout[-6000:]
        for host in hosts:
            exp = site.appliances[host]
            report = site.report(host)
            if exp.converge:
                assert report["outcome"] == "converged", report
                assert report["version"] == exp.version
                assert report["anomalies"] == ([exp.anomaly] if exp.anomaly else [])
            else:
                assert report["outcome"] == (
                    "unreachable" if exp.anomaly == "unreachable" else "left_untouched"
                ), report
                if exp.anomaly != "unreachable":
                    assert exp.anomaly in report["anomalies"], report
                assert tree_digest(site.root(host)) == before[host], host
        wait_backlogs_stored(site, questdb, table, converging)
        for host in converging:  # each agent was born (NBIRTH) with its legacy sensors
            tags = {r.tag for r in site.appliances[host].unsent}
            assert tags <= births(questdb, table, host), host

        second = site.play(inventory)
        assert second.returncode == 0, second.stdout[-6000:]
        counters = recap(second.stdout)
        # Nothing changes: converged appliances are left as they are; those left alone get the
        # bundle installed for detection and removed again (net: byte for byte untouched,
        # checked below), which is not a change either.
        assert {h: counters[h]["changed"] for h in hosts} == dict.fromkeys(hosts, 0), second.stdout[
            -4000:
        ]
        assert site.report(anomalous["unreachable"])["outcome"] == "unreachable"
        for host in hosts:
            if not site.appliances[host].converge:
                assert tree_digest(site.root(host)) == before[host], host
    finally:
        site.stop_agents()
        subprocess.run(["umount", str(full)], check=False)


def test_unhealthy_canary_rolls_back_byte_for_byte_and_stops_the_wave(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, ingest: tuple[ManagedProcess, str]
) -> None:
    site = Site(tmp_path / "site")
    canary = site.add(1, "v4.2")
    rest = [site.add(2, "v1.0"), site.add(3, "v3.0")]
    # The canary's agent is pointed at a port nobody listens on: never live, never healthy.
    site.host_vars[canary] = {
        "derrick_migrate_mqtt_servers": [{"host": "127.0.0.1", "port": allocate_port()}],
        "derrick_switch_health_timeout_s": 8,
    }
    before = {h: tree_digest(site.root(h)) for h in [canary, *rest]}
    inventory = site.inventory(mosquitto.port)
    try:
        run = site.play(inventory)
        assert run.returncode != 0, run.stdout[-4000:]
        assert site.report(canary)["outcome"] == "rolled_back"
        # the installation and data exactly as before; the backup and the record stay
        after = tree_digest(site.root(canary), exclude=(BACKUP_DIR,))
        assert after == {k: v for k, v in before[canary].items() if not k.startswith(BACKUP_DIR)}
        record = json.loads((site.root(canary) / BACKUP_DIR / "last-rollback.json").read_text())
        assert record["from_state"] == "trial" and "health" in record["reason"]
        # what the agent held unacknowledged (the legacy backlog it never sent) was kept
        kept = record["kept"]
        assert kept is not None and kept["samples"] >= len(site.appliances[canary].unsent), kept
        assert (site.root(canary) / BACKUP_DIR / Path(kept["file"]).name).exists()
        assert not (site.root(canary) / "run/derrick-edge.pid").exists()
        # max_fail_percentage 0: the wave stopped, the rest of the site was not touched
        for host in rest:
            assert tree_digest(site.root(host)) == before[host], host
            assert not (site.base / "reports" / f"{host}.json").exists(), host
    finally:
        site.stop_agents()


def test_interrupted_run_finishes_when_run_again_then_fleet_rollback_restores(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, ingest: tuple[ManagedProcess, str]
) -> None:
    _, table = ingest
    site = Site(tmp_path / "site")
    hosts = [site.add(1, "v2.0"), site.add(2, "v3.2"), site.add(3, "v4.1"), site.add(4, "v1.4")]
    before = {h: tree_digest(site.root(h)) for h in hosts}
    inventory = site.inventory(mosquitto.port)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")}
    try:
        # waves 1, 1, 2: kill the run once an appliance after the canary is on trial
        with (tmp_path / "killed-run.log").open("w") as log:
            run = subprocess.Popen(
                [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory),
                 str(REPO / "ansible" / "fleet-converge.yml")],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO / "ansible", env=env,
                start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 300
            while not any(state(site, h) == "trial" for h in hosts[1:]):
                assert run.poll() is None, "the run ended before it could be interrupted"
                assert time.monotonic() < deadline, "no appliance after the canary on trial"
                time.sleep(0.05)
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        assert not all(state(site, h) == "committed" for h in hosts)

        again = site.play(inventory)
        assert again.returncode == 0, again.stdout[-6000:]
        assert all(site.report(h)["outcome"] == "converged" for h in hosts)
        assert all(state(site, h) == "committed" for h in hosts)
        wait_backlogs_stored(site, questdb, table, hosts)

        check = site.play(inventory, "fleet-rollback.yml", "--check")
        assert check.returncode == 0, check.stdout[-4000:]
        assert all(state(site, h) == "committed" for h in hosts)
        assert {json.loads((site.base / "reports" / f"{h}.rollback.json").read_text())["outcome"]
                for h in hosts} == {"would_roll_back"}  # fmt: skip

        back = site.play(inventory, "fleet-rollback.yml")
        assert back.returncode == 0, back.stdout[-4000:]
        for host in hosts:
            report = json.loads((site.base / "reports" / f"{host}.rollback.json").read_text())
            assert report["outcome"] == "rolled_back" and report["from_state"] == "committed"
            after = tree_digest(site.root(host), exclude=(BACKUP_DIR,))
            assert after == {
                k: v for k, v in before[host].items() if not k.startswith(BACKUP_DIR)
            }, host
            assert not (site.root(host) / "run/derrick-edge.pid").exists()

        again_back = site.play(inventory, "fleet-rollback.yml")
        assert again_back.returncode == 0, again_back.stdout[-4000:]
        assert {h: recap(again_back.stdout)[h]["changed"] for h in hosts} == dict.fromkeys(hosts, 0)
        for host in hosts:
            report = json.loads((site.base / "reports" / f"{host}.rollback.json").read_text())
            assert report["outcome"] == "not_converged", report
    finally:
        site.stop_agents()
