"""The site gateway bridge (``broker/mosquitto/site-gateway.conf.template``) on real
Mosquitto: two brokers (site, cloud), one TLS bridge between them through a proxy that cuts
the link for 30 s, real edge agents on the site broker with per-node credentials, a real
ingest worker (Primary Host) and QuestDB on the cloud broker.

Proved: every value the agents published (seen by an observer on the site broker) is stored
in QuestDB exactly once, every batch is acknowledged, and the cut was real (the cloud saw no
data from the site while it lasted); nobody restarted anything.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from api import broker_auth
from api.broker_auth import ServiceAccount, ServiceRole
from harness import Mosquitto, QuestDB
from harness.derrick import EdgeSpec, SimulatedDevice, edge_process, ingest_process
from harness.observer import Row, SparkplugObserver
from harness.process import ManagedProcess
from harness.proxy import ProxyProcess
from harness.site_gateway import SiteGateway
from harness.tls import make_scratch_pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = "s003"
NODES = (f"{SITE}-a001", f"{SITE}-a002")
OUTAGE_S = 30


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _secret(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _acked(queue_db: Path) -> int:
    db = sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
    finally:
        db.close()
    return 0 if row is None else int(row[0])


def _unacked(queue_db: Path, site: str, node: str) -> set[Row]:
    """The readings a stopped agent still holds unacknowledged (it resends them next run)."""
    db = sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True)
    try:
        return {
            (ts, site, node, device, name, value)
            for ts, device, name, value in db.execute(
                "SELECT s.ts_ms, m.device, m.name, s.value FROM sample s "
                "JOIN metric m ON m.id = s.metric "
                "WHERE s.batch > (SELECT value FROM meta WHERE key = 'acked')"
            )
        }
    finally:
        db.close()


@pytest.mark.timeout(480)  # ~70 s idle; 217 s measured at load average 64
def test_bridge_cut_for_30_s_every_value_stored_exactly_once(
    tmp_path: Path, questdb: QuestDB
) -> None:
    pki = make_scratch_pki(tmp_path / "pki", clients=("gw-s003",))
    auth = tmp_path / "auth"
    auth.mkdir()
    # cloud: the Primary Host, the site's gateway account, a watcher; TLS with client certs
    ingest_cred = broker_auth.issue_for("ingest")
    gateway_cred = broker_auth.issue_for("gw-s003")
    watch_cred = broker_auth.issue_for("watch")
    cloud_accounts = [
        ServiceAccount("ingest"),
        ServiceAccount("gw-s003", ServiceRole.SITE_GATEWAY, SITE),
        ServiceAccount("watch", ServiceRole.READER),
    ]
    cloud_creds = [ingest_cred.credential, gateway_cred.credential, watch_cred.credential]
    cloud = Mosquitto(
        tmp_path / "cloud",
        insecure_allow_anonymous=False,
        password_file=_secret(
            auth / "cloud.passwd", broker_auth.mosquitto_password_file(cloud_creds)
        ),
        acl_file=_secret(auth / "cloud.acl", broker_auth.mosquitto_acl_file([], cloud_accounts)),
        tls=pki,
        require_client_certificate=True,
    )
    # site: per-node credentials and ACLs, and a reader for the observer
    node_creds = {a: broker_auth.issue(a) for a in NODES}
    site_watch = broker_auth.issue_for("watch")
    site_passwd = broker_auth.mosquitto_password_file(
        [c.credential for c in node_creds.values()], [site_watch.credential]
    )
    site_acl = broker_auth.mosquitto_acl_file(NODES, [ServiceAccount("watch", ServiceRole.READER)])

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    procs: list[ManagedProcess] = []
    # refuse_when_cut: see docs/broker-security.md (Mosquitto 2.0.11 freezes when the far
    # end accepts TCP and closes during the TLS handshake)
    with cloud, ProxyProcess(tmp_path / "link", cloud.tls_port, refuse_when_cut=True) as link:
        gateway = SiteGateway(
            tmp_path / "gateway",
            site=SITE,
            cloud_port=link.port,
            cloud_ca=pki.ca,
            remote_username="gw-s003",
            remote_password=gateway_cred.password,
            password_file=_secret(auth / "site.passwd", site_passwd),
            acl_file=_secret(auth / "site.acl", site_acl),
            client_cert=pki.clients["gw-s003"],
        )
        with (
            gateway,
            SparkplugObserver(
                "127.0.0.1", gateway.port, username="watch", password=site_watch.password
            ) as at_site,
            SparkplugObserver(
                "127.0.0.1", cloud.port, username="watch", password=watch_cred.password
            ) as at_cloud,
        ):
            assert "password" not in repr(gateway)
            ingest = ingest_process(
                tmp_path / "ingest",
                mqtt_port=cloud.port,
                ilp_conf=questdb.ilp_conf,
                pg_dsn=questdb.pg_dsn,
                table_prefix=prefix,
                extra="flush_interval_ms = 100",
                mqtt_username="ingest",
                mqtt_password_file=_secret(auth / "ingest.pw", ingest_cred.password),
            )
            procs.append(ingest)
            for n, node in enumerate(NODES, start=1):
                procs.append(
                    edge_process(
                        EdgeSpec(
                            site=SITE,
                            appliance=node,
                            devices=[SimulatedDevice("daq", seed=n)],
                            normal_per_min=3000,
                            alarm_per_min=3000,
                            ack_timeout_ms=3000,
                            link_bytes_per_s=200_000,
                            mqtt_username=node,
                            mqtt_password_file=_secret(
                                auth / f"{node}.pw", node_creds[node].password
                            ),
                        ),
                        tmp_path / node,
                        [gateway.port],
                    )
                )
            try:
                for p in procs:
                    p.start()
                # births need the Primary Host's STATE, which reaches the site over the bridge
                _wait(lambda: at_cloud.counts["DBIRTH"] >= len(NODES), 90, "births at the cloud")
                time.sleep(4)
                link.cut()
                cut_at = time.time_ns() // 1_000_000
                time.sleep(OUTAGE_S)
                restored_at = time.time_ns() // 1_000_000
                link.restore()

                # every batch published until a few seconds after the restore is acknowledged
                time.sleep(5)
                targets = {n: at_site.max_batch[(SITE, n)] for n in NODES}
                targets_at = time.time_ns() // 1_000_000
                _wait(
                    lambda: all(_acked(tmp_path / n / "queue.db") >= t for n, t in targets.items()),
                    120,
                    f"batches up to {targets} to be acknowledged",
                )
            finally:
                for p in reversed(procs):
                    p.stop()

            # the cut was real: the cloud received no data from the site while it lasted
            for node in NODES:
                crossed = [
                    t
                    for t in at_cloud.data_times.get((SITE, node), [])
                    if cut_at + 1000 < t < restored_at
                ]
                assert not crossed, f"{node}: {len(crossed)} data messages crossed a cut link"
            published = {r for r in at_site.snapshot() if r[1] == SITE}
            assert not at_site.errors, at_site.errors[:5]

    # readings taken during the outage were published at the site (and must be stored)
    for node in NODES:
        during = sum(1 for r in published if r[2] == node and cut_at < r[0] < restored_at)
        assert during >= 0.9 * 50 * (OUTAGE_S - 2), (node, during)
    # Live data flowed until the agents stopped: what they published after the acknowledged
    # targets may still be in flight, and then it is in their queues, unacknowledged (they
    # resend it on their next run). Nothing published may be in neither place.
    held = set().union(*(_unacked(tmp_path / n / "queue.db", SITE, n) for n in NODES))
    owed = {r for r in published if r not in held}
    early = sorted(r for r in held if r[0] < targets_at - 5000)
    assert not early, f"readings of acknowledged batches still held: {early[:3]}"
    rows: list[Row] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = questdb.exec_sql(
            f"SELECT ts::long, site, node, device, metric, value FROM {prefix}telemetry_raw"
        )
        rows = [(t // 1_000_000, s, n, d, m, v) for t, s, n, d, m, v in result["dataset"]]
        if owed <= set(rows):
            break
        time.sleep(0.5)
    missing = owed - set(rows)
    assert not missing, (
        f"{len(missing)} of {len(published)} published readings neither stored nor held "
        f"unacknowledged ({len(held)} held): {sorted(missing)[:3]}"
    )
    keys = [r[:5] for r in rows]
    assert len(keys) == len(set(keys)), "a (ts, site, node, device, metric) stored twice"
