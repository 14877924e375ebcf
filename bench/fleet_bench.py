"""Fleet benchmark: wall time to converge a simulated site with ``fleet-converge.yml``.

Builds N legacy appliances (the ten versions in turn, unsent readings from a seed) as root
directories on the local connection (``tests/fleet``: the same generator and site as the
tests), starts a real Mosquitto, QuestDB and ingest worker (``harness``, free ports, a temporary
directory), and runs the real ``ansible-playbook``:

* the first run (canary waves ``[1, "10%", "100%"]``): install, detect, migrate, switch with
  the health gate, every appliance's agent started;
* until every unsent legacy reading is in QuestDB (original timestamp, engineering value);
* the second run (changed=0 asserted), what a re-run of a converged site costs;
* the controller's peak RSS (ansible-playbook and its forks) and the top tasks by wall time
  (``bench/ansible_callbacks/derrick_timing.py``).

Usage: ``python bench/fleet_bench.py [--appliances 100] [--forks 20] [--quick] [--json]``
from the repository root. ``--quick`` converges 4 appliances (a smoke test, not a
measurement).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _common as common  # noqa: E402

from harness import Mosquitto, QuestDB  # noqa: E402
from harness.derrick import ingest_process  # noqa: E402
from tests.fleet.legacy_fixtures import VERSIONS  # noqa: E402
from tests.fleet.site import Site, recap  # noqa: E402


def stored(qdb: QuestDB, table: str) -> set[tuple[str, int, str, float]]:
    try:
        rows = qdb.exec_sql(f"SELECT node, ts::long, metric, value FROM {table} WHERE historical")
    except Exception:  # the table does not exist before the first flush
        return set()
    return {(n, t, m, v) for n, t, m, v in rows["dataset"]}


def timed_play(site: Site, inventory: Path, forks: int, base: Path, name: str) -> dict[str, Any]:
    out = base / f"timing-{name}.json"
    env = {
        "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "bench" / "ansible_callbacks"),
        "ANSIBLE_CALLBACKS_ENABLED": "derrick_timing",
        "DERRICK_TIMING_OUT": str(out),
    }
    t0 = time.monotonic()
    done = site.play(inventory, "fleet-converge.yml", "-f", str(forks), timeout=3600,
                     env_extra=env)  # fmt: skip
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name} run failed (rc {done.returncode}):\n{done.stdout[-4000:]}")
    tasks = json.loads(out.read_text())
    return {"wall_s": wall, "recap": recap(done.stdout), "tasks": tasks}


def run(appliances: int, forks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        base = Path(tmp)
        with Mosquitto(base / "mosquitto") as mq, QuestDB(base / "questdb") as qdb:
            prefix = f"b{uuid.uuid4().hex[:6]}_"
            worker = ingest_process(base / "ingest", mqtt_port=mq.port, ilp_conf=qdb.ilp_conf,
                                    pg_dsn=qdb.pg_dsn, table_prefix=prefix)  # fmt: skip
            worker.start()
            site = Site(base / "site")
            common.step(f"building {appliances} legacy appliances")
            hosts = [site.add(1 + i, VERSIONS[i % 10], seed=1 + i // 10) for i in range(appliances)]
            want = {(h, r.ts_ns, r.tag, r.value) for h in hosts for r in site.appliances[h].unsent}
            # the agents' own publish defaults (the tests publish every 200 ms)
            inventory = site.inventory(mq.port, derrick_migrate_publish={})
            try:
                common.step(f"converging (forks {forks})")
                t0 = time.monotonic()
                first = timed_play(site, inventory, forks, base, "first")
                common.step(f"first run {first['wall_s']:.0f} s; waiting for the backlogs")
                while missing := want - stored(qdb, f"{prefix}telemetry_raw"):
                    if time.monotonic() - t0 > first["wall_s"] + 300:
                        raise SystemExit(
                            f"{len(missing)} of {len(want)} legacy readings not stored 5 min"
                            f" after the run, e.g. {sorted(missing)[:3]}"
                        )
                    time.sleep(1)
                all_stored = time.monotonic() - t0
                common.step("second run")
                second = timed_play(site, inventory, forks, base, "second")
                changed = sum(second["recap"][h]["changed"] for h in hosts)
                if changed:
                    raise SystemExit(f"second run changed {changed} things (expected 0)")
            finally:
                site.stop_agents()
                worker.stop()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "machine": common.machine(),
        "appliances": appliances,
        "forks": forks,
        "readings": len(want),
        "first_s": first["wall_s"],
        "all_stored_s": all_stored,
        "second_s": second["wall_s"],
        "peak_rss_mb": peak_kb / 1024,
        "top_tasks_first": sorted(first["tasks"].items(), key=lambda kv: -kv[1])[:8],
        "top_tasks_second": sorted(second["tasks"].items(), key=lambda kv: -kv[1])[:5],
    }


def table(r: dict[str, Any]) -> str:
    n = r["appliances"]
    lines = [
        f"machine: {r['machine']}",
        f"{'what':<52} {'how many':>9} {'wall s':>8} {'per min':>8} {'peak RSS':>9}",
        f"{'converge, first run (forks ' + str(r['forks']) + ')':<52} {n:>9} "
        f"{r['first_s']:>8.1f} {n / r['first_s'] * 60:>8.1f} {r['peak_rss_mb']:>7.0f}MB",
        f"{'... until every legacy reading is in QuestDB':<52} {r['readings']:>9} "
        f"{r['all_stored_s']:>8.1f} {'':>8} {'':>9}",
        f"{'converge, second run (changed=0)':<52} {n:>9} {r['second_s']:>8.1f} "
        f"{n / r['second_s'] * 60:>8.1f} {'':>9}",
        "top tasks, first run (wall s, all waves):",
        *(f"  {t:<60} {s:>7.1f}" for t, s in r["top_tasks_first"]),
        "top tasks, second run:",
        *(f"  {t:<60} {s:>7.1f}" for t, s in r["top_tasks_second"]),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--appliances", type=int, default=100)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="4 appliances: a smoke test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(4 if args.quick else args.appliances, args.forks)
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
