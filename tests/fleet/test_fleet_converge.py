"""``fleet-converge.yml`` on a simulated site: real ``ansible-playbook``, real agents against a
real Mosquitto, ingest and QuestDB. Every upgradable appliance converges and its unsent legacy
readings land in QuestDB with their original timestamps and engineering values; anomalies are
reported and left byte for byte untouched; a second run changes nothing."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Mosquitto, QuestDB
from harness.derrick import ingest_process
from harness.process import ManagedProcess
from tests.fleet.legacy_fixtures import BACKUP_DIR, tree_digest
from tests.fleet.site import Site, recap

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def ingest(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB
) -> Iterator[tuple[ManagedProcess, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    proc = ingest_process(
        tmp_path / "ingest",
        mqtt_port=mosquitto.port,
        ilp_conf=questdb.ilp_conf,
        pg_dsn=questdb.pg_dsn,
        table_prefix=prefix,
    )
    proc.start()
    try:
        yield proc, f"{prefix}telemetry_raw"
    finally:
        proc.stop()


def stored(questdb: QuestDB, table: str, node: str) -> set[tuple[int, str, float]]:
    try:
        result = questdb.exec_sql(
            f"SELECT ts::long, metric, value FROM {table} WHERE node = '{node}' AND historical"
        )
    except Exception:  # the table does not exist before the first flush
        return set()
    return {(t, m, v) for t, m, v in result["dataset"]}


def test_site_converges_anomalies_untouched_second_run_changes_nothing(
    tmp_path: Path, mosquitto: Mosquitto, questdb: QuestDB, ingest: tuple[ManagedProcess, str]
) -> None:
    _, table = ingest
    site = Site(tmp_path / "site")
    hosts = [
        site.add(1, "v4.2"),
        site.add(2, "v1.0"),
        site.add(3, "v2.3", anomaly="aborted-upgrade"),
        site.add(4, "v3.1", anomaly="no-marker"),
        site.add(5, "v1.4", anomaly="invalid-config"),
        site.add(6, "v3.2", anomaly="disk-full"),
    ]
    full = site.root(hosts[5]) / BACKUP_DIR  # a small tmpfs: the backup cannot be written
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(full)],
                   check=True)  # fmt: skip
    untouched = {h: tree_digest(site.root(h)) for h in hosts if not site.appliances[h].converge}
    inventory = site.inventory(mosquitto.port)
    try:
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
                assert report["outcome"] == "left_untouched", report
                assert exp.anomaly in report["anomalies"], report
                assert tree_digest(site.root(host)) == untouched[host], host
        # every unsent legacy reading in QuestDB, original timestamp, engineering value
        deadline = time.monotonic() + 60
        missing: dict[str, set[tuple[int, str, float]]] = {}
        while time.monotonic() < deadline:
            missing = {}
            for host in hosts:
                exp = site.appliances[host]
                if exp.converge:
                    want = {(r.ts_ns, r.tag, r.value) for r in exp.unsent}
                    lost = want - stored(questdb, table, host)
                    if lost:
                        missing[host] = lost
            if not missing:
                break
            time.sleep(1)
        assert not missing, {h: sorted(m)[:3] for h, m in missing.items()}
        second = site.play(inventory)
        assert second.returncode == 0, second.stdout[-6000:]
        counters = recap(second.stdout)
        # Converged appliances: nothing changes. Appliances left alone get the bundle installed
        # and removed again (net: byte for byte untouched, checked below) - reported as changed.
        converged = [h for h in hosts if site.appliances[h].converge]
        assert {h: counters[h]["changed"] for h in converged} == dict.fromkeys(converged, 0), (
            second.stdout[-4000:]
        )
        for host, digest in untouched.items():
            assert tree_digest(site.root(host)) == digest, host
    finally:
        site.stop_agents()
        subprocess.run(["umount", str(full)], check=False)
