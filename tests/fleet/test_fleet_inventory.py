"""The fleet inventories and the census, with real ``ansible-inventory`` / ``ansible-playbook``
runs: the ``derrick_registry`` plugin on a file export (the lab inventory as committed) and on
the real API over HTTP (``api.app`` on a real PostgreSQL registry), ``--limit s017`` giving
exactly that site, retired appliances left out, a malformed export refused with the file and
entry named; ``fleet-census.yml`` on a mixed simulated site reporting what runs on each
appliance and changing nothing, in check mode or not."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api import keys, registry
from api.access import Access
from api.app import Services, create_app
from api.readings import Reader
from core.tables import TableSet
from harness.asgi import serve_in_thread
from tests.api.conftest import registry_dsn  # noqa: F401 - the fixture, reused
from tests.fleet.legacy_fixtures import tree_digest
from tests.fleet.site import REPO, Site, ansible, recap

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PLUGIN = REPO / "ansible" / "inventory_plugins" / "derrick_registry.py"


def load_plugin() -> ModuleType:
    name = "derrick_registry_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def export(*appliances: dict[str, Any], sites: tuple[str, ...] = ("s017", "s018")) -> str:
    return json.dumps({"sites": [{"id": s} for s in sites], "appliances": list(appliances)})


def inventory_json(text: str) -> Any:
    """``ansible-inventory --list`` output; registry data comes marked ``__ansible_unsafe``
    (Ansible never templates it) and is unwrapped here."""

    def unwrap(obj: dict[str, Any]) -> Any:
        return obj["__ansible_unsafe"] if set(obj) == {"__ansible_unsafe"} else obj

    return json.loads(text, object_hook=unwrap)


def list_hosts(output: str) -> dict[str, set[str]]:
    """``--list-hosts`` output -> hosts per play."""
    plays: dict[str, set[str]] = {}
    play, in_hosts = "", False
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("play #"):
            play, in_hosts = stripped, False
            plays[play] = set()
        elif stripped.startswith("hosts ("):
            in_hosts = True
        elif not stripped:
            in_hosts = False
        elif in_hosts:
            plays[play].add(stripped)
    return plays


# -- the file export: the lab inventory as committed -------------------------------------


LAB_EXPORT = export(
    {"id": "s017-a001", "site": "s017", "state": "provisioned", "address": "192.0.2.1",
     "vars": {"derrick_root": "/srv/a001"}},
    {"id": "s017-a002", "site": "s017", "state": "discovered"},
    {"id": "s017-a003", "site": "s017", "state": "retired", "address": "192.0.2.3"},
    {"id": "s018-a001", "site": "s018", "state": "provisioned", "address": "192.0.2.4"},
)  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """``inventories/lab`` as committed, next to its export (``../lab-registry.json``)."""
    root = tmp_path / "inventories"
    shutil.copytree(REPO / "inventories" / "lab", root / "lab")
    (root / "lab-registry.json").write_text(LAB_EXPORT)
    return root / "lab"


def test_lab_inventory_limit_gives_exactly_the_site_without_retired(lab: Path) -> None:
    done = ansible("ansible-playbook", "-i", str(lab), "fleet-converge.yml", "fleet-census.yml",
                   "--limit", "s017", "--list-hosts")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plays = list_hosts(done.stdout)
    assert len(plays) == 2, done.stdout
    for hosts in plays.values():
        assert hosts == {"s017-a001", "s017-a002"}, done.stdout

    listed = ansible("ansible-inventory", "-i", str(lab), "--list")
    assert listed.returncode == 0, listed.stderr
    inv = inventory_json(listed.stdout)
    assert '"__ansible_unsafe": "192.0.2.1"' in listed.stdout  # registry data is never templated
    assert set(inv["appliances"]["children"]) == {"s017", "s018"}
    assert set(inv["s017"]["hosts"]) == {"s017-a001", "s017-a002"}
    assert set(inv["lab"]["hosts"]) == {"s017-a001", "s017-a002", "s018-a001"}
    assert set(inv["state_provisioned"]["hosts"]) == {"s017-a001", "s018-a001"}
    assert set(inv["state_discovered"]["hosts"]) == {"s017-a002"}
    assert "state_retired" not in inv
    hostvars = inv["_meta"]["hostvars"]
    assert "s017-a003" not in hostvars
    a001 = hostvars["s017-a001"]
    assert a001["ansible_host"] == "192.0.2.1"  # the export's address
    assert a001["derrick_root"] == "/srv/a001"  # the export's vars
    assert (a001["derrick_site"], a001["derrick_environment"]) == ("s017", "lab")
    assert a001["derrick_converge_waves"] == [1, 2]  # the lab's group_vars
    # vault indirection: the inventory names the vault variable, never holds the secret
    assert a001["derrick_mqtt_password"] == "{{ vault_derrick_mqtt_password }}"
    assert "ansible_host" not in hostvars["s017-a002"]


def test_malformed_export_is_refused_naming_the_file_and_entry(lab: Path) -> None:
    bad = export(
        {"id": "s017-a001", "site": "s017", "state": "provisioned"},
        {"id": "s018-a002", "site": "s017", "state": "provisioned"},
    )
    path = lab.parent / "lab-registry.json"
    path.write_text(bad)
    done = ansible("ansible-inventory", "-i", str(lab), "--list")
    assert done.returncode != 0
    assert f"{path}: appliances[1]: appliance s018-a002 is listed under site 's017'" in (
        done.stderr
    ), done.stderr


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "not a registry export"),
        (export({"id": "s17-a001", "site": "s17", "state": "provisioned"}),
         "appliances[0]: appliance id 's17-a001' is not s<NNN>-a<NNN>"),
        (export({"id": "s017-a001", "site": "s017", "state": "gone"}),
         "at `$.appliances[0].state`"),
        (export({"id": "s017-a001", "site": "s017", "state": "provisioned", "ip": "x"}),
         "unknown field `ip` - at `$.appliances[0]`"),
        (export({"id": "s017-a001", "site": "s017"}),
         "missing required field `state` - at `$.appliances[0]`"),
        (export({"id": "s019-a001", "site": "s019", "state": "provisioned"}),
         "appliances[0]: s019-a001: site s019 is not in sites"),
        (export({"id": "s017-a001", "site": "s017", "state": "provisioned"},
                {"id": "s017-a001", "site": "s017", "state": "retired"}),
         "appliances[1]: appliance s017-a001 appears twice"),
        (export({"id": "s017-a001", "site": "s017", "state": "provisioned",
                 "address": "a", "ansible_host": "b"}),
         "appliances[0]: s017-a001 has both address and ansible_host"),
        (export({"id": "s017-a001", "site": "s017", "state": "provisioned",
                 "vars": {"derrick_site": "s018"}}),
         "appliances[0]: s017-a001: variable name 'derrick_site' not allowed"),
    ],
)  # fmt: skip
def test_export_checks_name_the_entry(doc: str, message: str) -> None:
    plugin = load_plugin()
    with pytest.raises(plugin.AnsibleParserError) as caught:
        plugin.appliances_from_export("export.json", doc.encode())
    assert str(caught.value).startswith("export.json: ")
    assert message in str(caught.value)


# -- the API source: the real app on a real registry -------------------------------------


@dataclass
class RegistryApi:
    url: str
    key: str
    dsn: str


@pytest.fixture
def registry_api(registry_dsn: str) -> Iterator[RegistryApi]:  # noqa: F811
    """``api.app`` under uvicorn on the test's registry: sites s017 (a001 provisioned, a002
    discovered, a003 retired), s018 (a001), s019 (none); an ops key allowed 2 requests/s
    (burst 2), so an inventory of three sites meets the rate limit. Only the registry routes
    are used: the QuestDB pool is never opened."""
    with psycopg.connect(registry_dsn, autocommit=True) as conn:
        registry.create_tenant(conn, "derrick", "Derrick Ops", "operator")
        registry.create_tenant(conn, "acme", "Acme Drilling")
        for site in ("s017", "s018", "s019"):
            registry.create_site(conn, site, "acme")
        for appliance in ("s017-a001", "s017-a003", "s018-a001"):
            registry.provision(conn, appliance)
        registry.retire(conn, "s017-a003")
        # seen in a birth, not provisioned (what sync_catalogue records)
        conn.execute("INSERT INTO appliances (id, site_id) VALUES ('s017-a002', 's017')")
        user = registry.create_user(conn, "derrick", "fleet@derrick.example", keys.Role.OPS)
        key = registry.issue_api_key(conn, user, "inventory", rate_per_s=2.0, burst=2).plaintext
    pg: AsyncConnectionPool[Any] = AsyncConnectionPool(
        registry_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    unused: AsyncConnectionPool[Any] = AsyncConnectionPool("host=127.0.0.1 port=9", open=False)
    app = create_app(Services(Access(pg), Reader(unused, TableSet(""), "kpi"), pools=[pg]))
    with serve_in_thread(app) as url:
        yield RegistryApi(url, key, registry_dsn)


def test_api_source_builds_the_sites_from_the_registry(
    tmp_path: Path, registry_api: RegistryApi
) -> None:
    inventory = tmp_path / "staging"
    inventory.mkdir()
    (inventory / "registry.derrick_registry.yml").write_text(
        "plugin: derrick_registry\nenvironment: staging\nsource: api\n"
        f"api_url: {registry_api.url}\nallow_plain_http: true\n"
        'address_template: "{appliance}.{site}.fleet.test"\n'
    )
    env = {"DERRICK_API_KEY": registry_api.key}
    out = tmp_path / "inventory.json"
    listed = ansible("ansible-inventory", "-i", str(inventory), "--list", "--output", str(out),
                     "-vvv", env=env)  # fmt: skip
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr
    inv = inventory_json(out.read_text())
    assert set(inv["appliances"]["children"]) == {"s017", "s018"}  # s019 has no appliance
    assert set(inv["s017"]["hosts"]) == {"s017-a001", "s017-a002"}  # a003 is retired
    assert set(inv["staging"]["hosts"]) == {"s017-a001", "s017-a002", "s018-a001"}
    assert set(inv["state_discovered"]["hosts"]) == {"s017-a002"}
    a002 = inv["_meta"]["hostvars"]["s017-a002"]
    assert a002["ansible_host"] == "s017-a002.s017.fleet.test"
    assert a002["derrick_appliance_state"] == "discovered"
    # four requests at 2/s with a burst of 2: the plugin waited out the 429s
    assert "rate limited (429), waiting" in listed.stdout
    # the key is never shown: not in the inventory, not in the verbose output
    secret = registry_api.key.rsplit("_", 1)[1]
    for text in (out.read_text(), listed.stdout, listed.stderr):
        assert secret not in text

    done = ansible("ansible-playbook", "-i", str(inventory), "fleet-census.yml",
                   "--limit", "s017", "--list-hosts", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(list_hosts(done.stdout).values()) == [{"s017-a001", "s017-a002"}], done.stdout

    wrong = "dk_0123456789abcdef_" + "x" * 43
    refused = ansible("ansible-inventory", "-i", str(inventory), "--list",
                      env={"DERRICK_API_KEY": wrong})  # fmt: skip
    assert refused.returncode != 0
    assert f"{registry_api.url}/v1/sites: the API refused the key (401)" in refused.stderr
    assert "x" * 43 not in refused.stdout + refused.stderr


def test_registry_export_command_feeds_the_file_source(
    tmp_path: Path, registry_api: RegistryApi
) -> None:
    """``python -m api registry-export`` (for a technician without access to the API) writes
    the export the file source reads: the same inventory as the API source gives."""
    env = {**os.environ, "DERRICK_PG_DSN": registry_api.dsn}
    out = tmp_path / "registry-export.json"

    def export_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api", "registry-export", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip

    done = export_cmd(str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{out}: 4 appliance(s)"
    inventory = tmp_path / "staging"
    inventory.mkdir()
    (inventory / "registry.derrick_registry.yml").write_text(
        f"plugin: derrick_registry\nenvironment: staging\nsource: file\nexport_path: {out}\n"
    )
    listed = tmp_path / "inventory.json"
    run = ansible("ansible-inventory", "-i", str(inventory), "--list", "--output", str(listed))
    assert run.returncode == 0, run.stderr
    inv = inventory_json(listed.read_text())
    assert set(inv["s017"]["hosts"]) == {"s017-a001", "s017-a002"}  # a003 is retired
    assert set(inv["staging"]["hosts"]) == {"s017-a001", "s017-a002", "s018-a001"}
    assert set(inv["state_discovered"]["hosts"]) == {"s017-a002"}

    only = tmp_path / "s018.json"
    assert export_cmd(str(only), "--site", "s018").returncode == 0
    doc = json.loads(only.read_text())
    assert [a["id"] for a in doc["appliances"]] == ["s018-a001"]
    assert [s["id"] for s in doc["sites"]] == ["s018"]

    for bad, message in (("s999", "no such site: s999"), ("s01x';--", "site id")):
        refused = export_cmd(str(tmp_path / "bad.json"), "--site", bad)
        assert refused.returncode == 1
        assert message in refused.stderr, refused.stderr
    assert not (tmp_path / "bad.json").exists()


# -- the census -------------------------------------------------------------------------------


def test_census_reports_what_runs_where_and_changes_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    v14, v23 = site.add(1, "v1.4"), site.add(2, "v2.3")
    inferred = site.add(3, "v3.0", anomaly="no-marker")
    invalid = site.add(4, "v4.1", anomaly="invalid-config")
    lost = site.add(5, "v2.0", anomaly="unreachable")
    converged = site.add(6, "v4.2")
    site.mark_converged(converged, "0.1.0")
    unprobed = site.add(7, "v3.2")  # no Python 3.11 to detect with: its marker tells the version
    site.host_vars[unprobed] = {"derrick_census_python": ""}
    inventory = site.inventory(mqtt_port=1883)
    before = {h: tree_digest(site.root(h)) for h in site.appliances}
    reports = tmp_path / "site" / "reports"
    runs = {}
    for mode in ("check", "run"):
        done = site.play(inventory, "fleet-census.yml", *(["--check"] if mode == "check" else []))
        assert done.returncode == 0, done.stdout[-5000:]
        counters = recap(done.stdout)
        assert {h: counters[h]["changed"] for h in site.appliances} == dict.fromkeys(
            site.appliances, 0
        ), done.stdout[-3000:]
        assert {h: tree_digest(site.root(h)) for h in site.appliances} == before, mode
        runs[mode] = json.loads((reports / "census.json").read_text())
    report = runs["check"]
    assert report == runs["run"]  # check mode sees what a real run sees
    by_host = {e["host"]: e for e in report["hosts"]}
    assert set(by_host) == set(site.appliances)
    for host in (v14, v23):
        entry = by_host[host]
        want = ("legacy", site.appliances[host].version, [])
        assert (entry["running"], entry["legacy_version"], entry["anomalies"]) == want, entry
        assert entry["unsent"] == len(site.appliances[host].unsent)
    assert by_host[inferred]["legacy_version"] == "v3.0"
    assert by_host[inferred]["inferred"] is True
    assert by_host[inferred]["anomalies"] == ["no-marker"]
    assert (by_host[invalid]["running"], by_host[invalid]["legacy_version"]) == ("legacy", "v4.1")
    assert by_host[invalid]["anomalies"] == ["invalid-config"]
    assert by_host[lost]["running"] == "unreachable"
    assert (by_host[unprobed]["running"], by_host[unprobed]["legacy_version"]) == ("legacy", "v3.2")
    assert by_host[unprobed]["detected_by"] == "markers"
    assert by_host[v14]["detected_by"] == "module"
    agent = by_host[converged]
    want = ("derrick", "0.1.0", "committed", "healthy")
    assert (agent["running"], agent["release"], agent["agent_state"], agent["health"]) == want, (
        agent
    )
    assert report["sites"] == {
        "s017": {
            "appliances": 7,
            "running": {"derrick 0.1.0": 1, "legacy v1.4": 1, "legacy v2.3": 1,
                        "legacy v3.0": 1, "legacy v3.2": 1, "legacy v4.1": 1, "unreachable": 1},
            "anomalies": {"invalid-config": 1, "no-marker": 1},
            "unhealthy": 0,
        }
    }  # fmt: skip
    markdown = (reports / "census.md").read_text()
    assert "## s017: 7 appliances" in markdown
    assert "| derrick 0.1.0 | 1 |" in markdown
    assert f"| {invalid} | legacy v4.1 |" in markdown
    rows = (reports / "census.csv").read_text().splitlines()
    assert rows[0].startswith("host,site,running,legacy_version")
    assert len(rows) == 1 + len(site.appliances)
    assert f"{inferred},s017,legacy,v3.0,True," in (reports / "census.csv").read_text()


def test_census_filters_classify_what_the_play_cannot_stage_cheaply() -> None:
    """Entries the simulated site does not produce: an agent on trial with a failing health
    check, a detection that failed, a host the play lost, markers only (conflicting, none)."""
    spec = importlib.util.spec_from_file_location(
        "derrick_census_under_test", REPO / "ansible" / "filter_plugins" / "derrick_census.py"
    )
    assert spec is not None and spec.loader is not None
    census = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(census)
    trial = {"version": "v2.3", "converged": False, "agent_state": "trial", "anomalies": []}
    report = census.census_report({
        "s017-a001": {"site": "s017", "probed": True, "legacy": trial,
                      "probe_output": "release=releases/0.2.0\r\npython=yes\r\nhealth_rc=1\r\n"
                                      "health=UNHEALTHY: no status file\r\n"},
        "s017-a002": {"site": "s017", "probed": True, "legacy": None,
                      "detect_error": "MODULE FAILURE"},
        "s018-a001": None,
        "s018-a002": {"site": "s018", "probed": False,
                      "probe_output": "release=\npython=no\nmarker=opt/cdd/agent/VERSION=2.3.0\n"
                                      'marker=cdd_agent/__init__.py=__version__ = "2.0.1"\n'},
        "s018-a003": {"site": "s018", "probed": False, "probe_output": "release=\npython=no\n"},
    })  # fmt: skip
    entries = {e["host"]: e for e in report["hosts"]}
    assert entries["s017-a001"]["running"] == "switching"
    assert entries["s017-a001"]["release"] == "0.2.0"
    assert entries["s017-a001"]["health"] == "unhealthy"
    assert entries["s017-a001"]["detail"] == "UNHEALTHY: no status file"
    assert (entries["s017-a002"]["running"], entries["s017-a002"]["detail"]) == (
        "probe-failed",
        "MODULE FAILURE",
    )
    assert entries["s018-a001"]["running"] == "probe-failed"
    assert report["sites"]["s017"]["running"] == {"probe-failed": 1, "switching 0.2.0": 1}
    assert report["sites"]["s017"]["unhealthy"] == 1
    markers = entries["s018-a002"]
    assert (markers["running"], markers["legacy_version"], markers["anomalies"]) == (
        "legacy",
        None,
        ["conflicting-markers"],
    )
    assert markers["detected_by"] == "markers"
    assert entries["s018-a003"]["running"] == "not-probed"
    assert "| s017-a001 | switching 0.2.0 | trial | unhealthy |" in census.census_markdown(report)
