"""The registry in PostgreSQL: tenants, users, API keys, sites, appliances, provisioning.

Synchronous psycopg on purpose: these are administrative operations (the command line, the
tests, a sync job) run outside any event loop. The request path reads the registry through
:mod:`api.access` instead.

Appliances, their devices and metrics come from the births the ingest saw: :func:`sync_catalogue`
copies QuestDB's ``metric_catalogue`` into PostgreSQL for every appliance of a registered site
(appliances of unknown sites are counted and skipped). Provisioning issues the appliance's
MQTT credential (the password is returned once); retiring deletes it. The broker files are
rendered from what is provisioned (:func:`broker_files`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
import psycopg

from api import broker_auth, keys, readings
from api.broker_auth import BrokerCredential, IssuedPassword, ServiceAccount, ServiceRole
from api.errors import NotFoundError, QuotaError, RegistryError
from core import queries
from core.ids import IdError, check_appliance_id, check_site_id
from core.tables import TableSet

log = logging.getLogger(__name__)


def _refused(exc: psycopg.Error) -> RegistryError:
    diag = exc.diag.message_primary or str(exc)
    return RegistryError(f"refused by the registry: {diag}")


def create_tenant(
    conn: psycopg.Connection,
    tenant: str,
    name: str,
    kind: str = "customer",
    *,
    rate_per_s: float = 50.0,
    burst: int = 200,
    max_appliances: int | None = None,
) -> None:
    """A tenant; ``rate_per_s``/``burst``: the API allowance all its keys share;
    ``max_appliances``: how many of its appliances may be provisioned at once (None: no quota).
    """
    try:
        conn.execute(
            "INSERT INTO tenants (id, name, kind, rate_per_s, burst, max_appliances) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (tenant, name, kind, rate_per_s, burst, max_appliances),
        )
    except psycopg.Error as exc:
        raise _refused(exc) from exc


#: ``set_tenant_limits(max_appliances=NO_QUOTA)`` removes the appliance quota.
NO_QUOTA: Final = -1


def set_tenant_limits(
    conn: psycopg.Connection,
    tenant: str,
    *,
    rate_per_s: float | None = None,
    burst: int | None = None,
    max_appliances: int | None = None,
) -> None:
    """Change a tenant's limits; None leaves one as it is, ``max_appliances=NO_QUOTA`` lifts
    the appliance quota. Lowering the quota under what is provisioned retires nothing: new
    provisioning is refused until the count is under it."""
    quota: object = None if max_appliances == NO_QUOTA else max_appliances
    try:
        cur = conn.execute(
            "UPDATE tenants SET rate_per_s = coalesce(%s, rate_per_s), "
            "burst = coalesce(%s, burst), "
            "max_appliances = CASE WHEN %s THEN %s ELSE max_appliances END WHERE id = %s",
            (rate_per_s, burst, max_appliances is not None, quota, tenant),
        )
    except psycopg.Error as exc:
        raise _refused(exc) from exc
    if cur.rowcount != 1:
        raise NotFoundError(f"tenant {tenant!r} is not registered")


def create_user(conn: psycopg.Connection, tenant: str, email: str, role: keys.Role) -> int:
    try:
        row = conn.execute(
            "INSERT INTO users (tenant_id, email, role) VALUES (%s, %s, %s) RETURNING id",
            (tenant, email, keys.Role(role).value),
        ).fetchone()
    except psycopg.Error as exc:
        raise _refused(exc) from exc
    assert row is not None
    return int(row[0])


def issue_api_key(
    conn: psycopg.Connection,
    user_id: int,
    label: str = "",
    *,
    rate_per_s: float = 10.0,
    burst: int = 40,
) -> keys.IssuedKey:
    """A new key for ``user_id``; its plaintext is in the result and nowhere else."""
    issued = keys.generate()
    try:
        conn.execute(
            "INSERT INTO api_keys (key_id, user_id, secret_sha256, label, rate_per_s, burst) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (issued.key_id, user_id, issued.sha256, label, rate_per_s, burst),
        )
    except psycopg.Error as exc:
        raise _refused(exc) from exc
    log.info("issued API key %s for user %s", issued.key_id, user_id)
    return issued


def revoke_api_key(conn: psycopg.Connection, key_id: str) -> None:
    """Revoke a key (the API refuses it once its cached principal expires, ``cache_s``)."""
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    )
    if cur.rowcount != 1:
        raise NotFoundError(f"no active API key {key_id!r}")
    log.info("revoked API key %s", key_id)


def create_site(
    conn: psycopg.Connection, site: str, tenant: str, name: str = "", timezone: str = "UTC"
) -> None:
    """A site of ``tenant``; ``timezone`` (IANA) is the default zone of its daily, weekly and
    monthly aggregates."""
    try:
        check_site_id(site)
        readings.zone(timezone)
        conn.execute(
            "INSERT INTO sites (id, tenant_id, name, timezone) VALUES (%s, %s, %s, %s)",
            (site, tenant, name, timezone),
        )
    except (IdError, ValueError) as exc:
        raise RegistryError(str(exc)) from exc
    except psycopg.Error as exc:
        raise _refused(exc) from exc


def share_site(conn: psycopg.Connection, site: str, vendor_tenant: str) -> None:
    try:
        conn.execute(
            "INSERT INTO site_shares (site_id, vendor_tenant_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (site, vendor_tenant),
        )
    except psycopg.Error as exc:
        raise _refused(exc) from exc


# -- appliances from the births ---------------------------------------------------------------


class SyncReport(msgspec.Struct):
    appliances: int = 0
    devices: int = 0
    metrics: int = 0
    skipped_unknown_site: int = 0


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def sync_catalogue(
    conn: psycopg.Connection, questdb: psycopg.Connection, tables: TableSet
) -> SyncReport:
    """Copy the metric catalogue (every birth the ingest saw) into the registry."""
    rows = questdb.execute(queries.catalogue_latest(tables).encode()).fetchall()
    sites = {str(r[0]) for r in conn.execute("SELECT id FROM sites").fetchall()}
    report = SyncReport()
    appliances: set[str] = set()
    devices: set[tuple[str, str]] = set()
    with conn.transaction():
        for site, node, device, metric, datatype, unit, hot, first_seen, last_seen in rows:
            if site not in sites:
                report.skipped_unknown_site += 1
                continue
            try:
                check_appliance_id(node, site)
            except IdError:
                report.skipped_unknown_site += 1
                continue
            if node not in appliances:
                conn.execute(
                    "INSERT INTO appliances (id, site_id, first_seen, last_birth) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    "first_seen = LEAST(appliances.first_seen, EXCLUDED.first_seen), "
                    "last_birth = GREATEST(appliances.last_birth, EXCLUDED.last_birth)",
                    (node, site, _utc(first_seen), _utc(last_seen)),
                )
                appliances.add(node)
            if (node, device) not in devices:
                conn.execute(
                    "INSERT INTO devices (appliance_id, id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (node, device or ""),
                )
                devices.add((node, device))
            conn.execute(
                "INSERT INTO metrics (appliance_id, device_id, name, datatype, unit, hot, "
                "last_birth) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (appliance_id, device_id, name) DO UPDATE SET "
                "datatype = EXCLUDED.datatype, unit = EXCLUDED.unit, hot = EXCLUDED.hot, "
                "last_birth = EXCLUDED.last_birth",
                (node, device or "", metric, datatype, unit, bool(hot), _utc(last_seen)),
            )
            report.metrics += 1
    report.appliances, report.devices = len(appliances), len(devices)
    log.info(
        "catalogue sync: %d appliances, %d devices, %d metrics, %d skipped (unknown site)",
        report.appliances,
        report.devices,
        report.metrics,
        report.skipped_unknown_site,
    )
    return report


# -- provisioning ------------------------------------------------------------------------------


def provision(conn: psycopg.Connection, appliance: str) -> IssuedPassword:
    """Issue (or rotate) an appliance's MQTT credential; the password is returned once.

    An appliance not yet seen is registered under its site, which must exist.
    """
    try:
        site = check_appliance_id(appliance).split("-", 1)[0]
    except IdError as exc:
        raise RegistryError(str(exc)) from exc
    issued = broker_auth.issue(appliance)
    c = issued.credential
    with conn.transaction():
        # the tenant's row locked: concurrent provisioning of one tenant is serialised, so its
        # quota cannot be overrun by a race
        owner = conn.execute(
            "SELECT t.id, t.max_appliances FROM sites s JOIN tenants t ON t.id = s.tenant_id "
            "WHERE s.id = %s FOR UPDATE OF t",
            (site,),
        ).fetchone()
        if owner is None:
            raise NotFoundError(f"site {site!r} is not registered")
        _check_appliance_quota(conn, owner[0], owner[1], appliance)
        conn.execute(
            "INSERT INTO appliances (id, site_id, state, provisioned_at) "
            "VALUES (%s, %s, 'provisioned', now()) ON CONFLICT (id) DO UPDATE SET "
            "state = 'provisioned', provisioned_at = now(), retired_at = NULL",
            (appliance, site),
        )
        conn.execute(
            "INSERT INTO mqtt_credentials (appliance_id, username, salt, iterations, dk_sha512) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (appliance_id) DO UPDATE SET "
            "salt = EXCLUDED.salt, iterations = EXCLUDED.iterations, "
            "dk_sha512 = EXCLUDED.dk_sha512, issued_at = now()",
            (appliance, c.username, c.salt, c.iterations, c.dk_sha512),
        )
    log.info("provisioned %s (MQTT credential issued)", appliance)
    return issued


def _check_appliance_quota(
    conn: psycopg.Connection, tenant: str, quota: int | None, appliance: str
) -> None:
    """Refuse a new provisioned appliance over ``tenant``'s quota (rotating the credential of
    one already provisioned is always allowed)."""
    if quota is None:
        return
    row = conn.execute(
        "SELECT count(*) FROM appliances a JOIN sites s ON s.id = a.site_id "
        "WHERE s.tenant_id = %s AND a.state = 'provisioned' AND a.id <> %s",
        (tenant, appliance),
    ).fetchone()
    provisioned = row[0] if row else 0
    if provisioned >= quota:
        raise QuotaError(
            f"cannot provision {appliance}: tenant {tenant} has {provisioned} appliance(s) "
            f"provisioned and a quota of {quota}; retire one, or raise the quota with "
            f"'python -m api tenant-limits {tenant} --max-appliances N'"
        )


def retire(conn: psycopg.Connection, appliance: str) -> None:
    """Revoke the appliance's MQTT credential and mark it retired."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE appliances SET state = 'retired', retired_at = now() "
            "WHERE id = %s AND state <> 'retired'",
            (appliance,),
        )
        if cur.rowcount != 1:
            raise NotFoundError(f"no active appliance {appliance!r}")
        conn.execute("DELETE FROM mqtt_credentials WHERE appliance_id = %s", (appliance,))
    log.info("retired %s (MQTT credential revoked)", appliance)


def create_service_account(
    conn: psycopg.Connection,
    username: str,
    role: ServiceRole = ServiceRole.PRIMARY_HOST,
    site: str | None = None,
) -> IssuedPassword:
    """A broker account for a cloud service, confined to its role (or rotate its password):
    ingest workers are Primary Hosts, the API's live feed a reader, a site's bridge a site
    gateway (``site`` required)."""
    if (role is ServiceRole.SITE_GATEWAY) != (site is not None):
        raise RegistryError("a site is required for a site gateway account, and only for one")
    issued = broker_auth.issue_for(username)
    c = issued.credential
    try:
        conn.execute(
            "INSERT INTO mqtt_service_accounts "
            "(username, salt, iterations, dk_sha512, role, site_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username) DO UPDATE SET "
            "salt = EXCLUDED.salt, iterations = EXCLUDED.iterations, "
            "dk_sha512 = EXCLUDED.dk_sha512, role = EXCLUDED.role, "
            "site_id = EXCLUDED.site_id, issued_at = now()",
            (c.username, c.salt, c.iterations, c.dk_sha512, role.value, site),
        )
    except psycopg.Error as exc:
        raise _refused(exc) from exc
    log.info("service account %s (%s) issued", username, role.value)
    return issued


class BrokerFiles(msgspec.Struct, frozen=True):
    mosquitto_passwd: str
    mosquitto_acl: str
    emqx_users_json: str
    emqx_acl_conf: str


def _credentials(conn: psycopg.Connection, table: str) -> list[BrokerCredential]:
    sql = f"SELECT username, salt, iterations, dk_sha512 FROM {table} ORDER BY username"
    return [BrokerCredential(u, s, int(i), bytes(k)) for u, s, i, k in conn.execute(sql.encode())]


def broker_files(conn: psycopg.Connection) -> BrokerFiles:
    """Everything the brokers need, rendered from the provisioned appliances."""
    appliances = _credentials(conn, "mqtt_credentials")
    services = _credentials(conn, "mqtt_service_accounts")
    names = [c.username for c in appliances]
    service_names = [
        ServiceAccount(u, ServiceRole(r), s)
        for u, r, s in conn.execute(
            "SELECT username, role, site_id FROM mqtt_service_accounts ORDER BY username"
        )
    ]
    return BrokerFiles(
        mosquitto_passwd=broker_auth.mosquitto_password_file(appliances, services),
        mosquitto_acl=broker_auth.mosquitto_acl_file(names, service_names),
        emqx_users_json=broker_auth.emqx_users_json(appliances + services),
        emqx_acl_conf=broker_auth.emqx_acl_conf(names, service_names),
    )


def write_broker_files(conn: psycopg.Connection, directory: Path) -> dict[str, Path]:
    """Write the broker files atomically (0600) into ``directory``; reload the broker after
    (Mosquitto: SIGHUP rereads ``password_file`` and ``acl_file``)."""
    files = broker_files(conn)
    out: dict[str, Path] = {}
    for name, text in (
        ("mosquitto.passwd", files.mosquitto_passwd),
        ("mosquitto.acl", files.mosquitto_acl),
        ("emqx-users.json", files.emqx_users_json),
        ("emqx-acl.conf", files.emqx_acl_conf),
    ):
        out[name] = _write_atomic(directory / name, text.encode())
    return out


def _write_atomic(target: Path, data: bytes) -> Path:
    """``data`` into ``target`` (0600, parents created): a temporary file, fsync, rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target


def appliance_states(conn: psycopg.Connection, appliances: Sequence[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT id, state FROM appliances WHERE id = ANY(%s)", (list(appliances),)
    ).fetchall()
    return {str(a): str(s) for a, s in rows}


class ExportSite(msgspec.Struct, frozen=True):
    id: str
    name: str
    timezone: str


class ExportAppliance(msgspec.Struct, frozen=True):
    id: str
    site: str
    state: str


class RegistryExport(msgspec.Struct, frozen=True):
    """What the fleet's inventory plugin reads with ``source: file`` (version 1)."""

    version: int
    sites: list[ExportSite]
    appliances: list[ExportAppliance]


def export(conn: psycopg.Connection, sites: Sequence[str] = ()) -> RegistryExport:
    """Sites and their appliances (retired ones included: the plugin leaves them out and the
    census still names them), for technicians' inventories without access to the API;
    ``sites`` limits it (unknown ids: :class:`NotFoundError`)."""
    for site in sites:
        try:
            check_site_id(site)
        except IdError as exc:
            raise RegistryError(str(exc)) from None
    where, params = ("WHERE id = ANY(%s)", (list(sites),)) if sites else ("", ())
    found = conn.execute(
        f"SELECT id, name, timezone FROM sites {where} ORDER BY id", params
    ).fetchall()
    missing = sorted(set(sites) - {row[0] for row in found})
    if missing:
        raise NotFoundError(f"no such site: {', '.join(missing)}")
    ids = [str(row[0]) for row in found]
    apps = conn.execute(
        "SELECT id, site_id, state FROM appliances WHERE site_id = ANY(%s) ORDER BY id", (ids,)
    ).fetchall()
    return RegistryExport(
        version=1,
        sites=[ExportSite(str(i), str(n), str(tz)) for i, n, tz in found],
        appliances=[ExportAppliance(str(i), str(s), str(st)) for i, s, st in apps],
    )


def write_export(conn: psycopg.Connection, target: Path, sites: Sequence[str] = ()) -> int:
    """Write :func:`export` as JSON to ``target`` atomically -> the number of appliances."""
    doc = export(conn, sites)
    _write_atomic(target, msgspec.json.format(msgspec.json.encode(doc), indent=1) + b"\n")
    return len(doc.appliances)
