"""Alert rules, alerts and notification targets over HTTP.

- Rules belong to a site (and so to its tenant); ``customer_admin`` and ``ops`` create, edit
  and delete them, every customer user of the tenant reads them.
- Alerts are opened and auto-closed by the evaluator (``python -m alerts``); people
  acknowledge and resolve them here, each step with who, when and a note, kept in
  ``alert_events``. open → acknowledged → resolved (or open → resolved); anything else is 409.
- Notification targets (signed webhooks, e-mail addresses) belong to a tenant; a webhook's
  signing secret is returned once, when it is created.

Vendors see no alerts (403). An id the caller may not see is a 404 like a missing one.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Any, Literal

import msgspec
from litestar import delete, get, post, put
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter
from msgspec import Meta
from psycopg.types.json import Jsonb

from api.access import Principal
from api.app import SiteId, Svc, Who, _site
from api.keys import Role
from core.alerting import Condition, NoData, Severity

_NOT_FOUND = "not found"
MAX_ID = 2**62

RowId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="Numeric id")]
Text = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Note = Annotated[str, Meta(max_length=2000, pattern=r"^[^\x00]*$")]
MetricName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
ApplianceRef = Annotated[str, Meta(pattern=r"^s[0-9]{3,12}-a[0-9]{3,12}$")]
TargetId = Annotated[int, Meta(ge=1, le=MAX_ID)]
AlertState = Literal["open", "acknowledged", "resolved"]


class RuleIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Text
    condition: Condition
    metric: MetricName | None = None
    appliance: ApplianceRef | None = None
    severity: Severity = "warning"
    auto_close: bool = True
    targets: Annotated[list[TargetId], Meta(max_length=20)] = []
    enabled: bool = True


class RuleOut(msgspec.Struct):
    id: int
    site: str
    appliance: str | None
    metric: str | None
    name: str
    severity: str
    condition: Condition
    auto_close: bool
    targets: list[int]
    enabled: bool
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class AlertEvent(msgspec.Struct):
    action: str
    actor: str
    note: str
    at: dt.datetime


class AlertOut(msgspec.Struct):
    id: int
    rule_id: int
    site: str
    appliance: str
    metric: str | None
    severity: str
    state: str
    reason: str
    value: float | None
    sample_ts: dt.datetime
    opened_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    resolved_at: dt.datetime | None
    resolved_by: str | None
    resolve_note: str | None
    events: list[AlertEvent] | None = None


class StepIn(msgspec.Struct, forbid_unknown_fields=True):
    note: Note = ""


class TargetIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["webhook", "email"]
    address: Annotated[str, Meta(min_length=3, max_length=2000, pattern=r"^[^\x00-\x20]+$")]
    tenant: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{1,62}$")] | None = None

    def __post_init__(self) -> None:
        if self.kind == "webhook" and not self.address.startswith(("http://", "https://")):
            raise ValueError("a webhook address is an http:// or https:// URL")
        if self.kind == "email" and "@" not in self.address:
            raise ValueError("an e-mail address needs an '@'")


class TargetOut(msgspec.Struct):
    id: int
    tenant: str
    kind: str
    address: str
    created_at: dt.datetime
    secret: str | None = None  # only in the answer to the POST that created it


# -- permissions ------------------------------------------------------------------------------


def _no_vendors(who: Principal) -> None:
    if who.role is Role.VENDOR:
        raise PermissionDeniedException("vendor keys have no access to alerts")


def _admin(who: Principal) -> None:
    _no_vendors(who)
    if who.role not in (Role.CUSTOMER_ADMIN, Role.OPS):
        raise PermissionDeniedException("needs a customer_admin or ops key")


def _actor(who: Principal) -> str:
    return f"user:{who.user_id}"


# -- rules ------------------------------------------------------------------------------------

_RULE_COLS = (
    "id, site_id, appliance_id, metric, name, severity, condition::text, auto_close, targets, "
    "enabled, created_by, created_at, updated_at"
)


def _rule(row: tuple[Any, ...]) -> RuleOut:
    cond: Condition = msgspec.json.decode(row[6], type=Condition)
    return RuleOut(row[0], row[1], row[2], row[3], row[4], row[5], cond, row[7], list(row[8]),
                   row[9], row[10], row[11], row[12])  # fmt: skip


async def _check_rule(svc: Any, tenant: str, site: str, body: RuleIn) -> None:
    if body.metric is None and not isinstance(body.condition, NoData):
        raise ValidationException("metric is required for this kind of condition")
    async with svc.access.pool.connection() as conn:
        if body.appliance is not None:
            row = await (
                await conn.execute(
                    "SELECT 1 FROM appliances WHERE id = %s AND site_id = %s",
                    (body.appliance, site),
                )
            ).fetchone()
            if row is None:
                raise ValidationException(
                    f"appliance {body.appliance} is not an appliance of {site}"
                )
        if body.targets:
            rows = await (
                await conn.execute(
                    "SELECT id FROM notification_targets WHERE id = ANY(%s) AND tenant_id = %s "
                    "AND deleted_at IS NULL",
                    (body.targets, tenant),
                )
            ).fetchall()
            unknown = set(body.targets) - {r[0] for r in rows}
            if unknown:
                raise ValidationException(f"unknown notification target(s): {sorted(unknown)}")


async def _visible_rule(svc: Any, who: Principal, rule_id: int) -> tuple[Any, ...]:
    _no_vendors(who)
    async with svc.access.pool.connection() as conn:
        row = await (
            await conn.execute(
                f"SELECT {_RULE_COLS}, tenant_id FROM alert_rules "
                "WHERE id = %s AND deleted_at IS NULL",
                (rule_id,),
            )
        ).fetchone()
    if row is None or (who.role is not Role.OPS and row[-1] != who.tenant):
        raise NotFoundException(_NOT_FOUND)
    return tuple(row)


@post("/v1/sites/{site_id:str}/alert-rules", tags=["alerts"])
async def create_rule(*, svc: Svc, who: Who, site_id: SiteId, data: JSONBody[RuleIn]) -> RuleOut:
    """Create an alert rule on a site (customer_admin, ops)."""
    _no_vendors(who)
    site = await _site(svc, who, site_id)
    _admin(who)
    tenant = site[3]
    await _check_rule(svc, tenant, site_id, data)
    async with svc.access.pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO alert_rules (tenant_id, site_id, appliance_id, metric, name, "
                "severity, condition, auto_close, targets, enabled, created_by) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"RETURNING {_RULE_COLS}",
                (
                    tenant,
                    site_id,
                    data.appliance,
                    data.metric,
                    data.name,
                    data.severity,
                    Jsonb(msgspec.to_builtins(data.condition)),
                    data.auto_close,
                    data.targets,
                    data.enabled,
                    _actor(who),
                ),
            )
        ).fetchone()
    assert row is not None
    return _rule(row)


@get("/v1/sites/{site_id:str}/alert-rules", tags=["alerts"])
async def list_rules(*, svc: Svc, who: Who, site_id: SiteId) -> list[RuleOut]:
    """The site's alert rules."""
    _no_vendors(who)
    await _site(svc, who, site_id)
    async with svc.access.pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_RULE_COLS} FROM alert_rules WHERE site_id = %s AND deleted_at IS NULL "
                "ORDER BY id",
                (site_id,),
            )
        ).fetchall()
    return [_rule(r) for r in rows]


@get("/v1/alert-rules/{rule_id:int}", tags=["alerts"])
async def get_rule(*, svc: Svc, who: Who, rule_id: RowId) -> RuleOut:
    """One alert rule."""
    return _rule(await _visible_rule(svc, who, rule_id))


@put("/v1/alert-rules/{rule_id:int}", tags=["alerts"])
async def update_rule(*, svc: Svc, who: Who, rule_id: RowId, data: JSONBody[RuleIn]) -> RuleOut:
    """Replace a rule's definition (customer_admin, ops). The evaluator picks it up within
    its reload interval; the rule's open alerts stay open until they clear or are resolved."""
    row = await _visible_rule(svc, who, rule_id)
    _admin(who)
    await _check_rule(svc, row[-1], row[1], data)
    async with svc.access.pool.connection() as conn:
        new = await (
            await conn.execute(
                "UPDATE alert_rules SET appliance_id = %s, metric = %s, name = %s, severity = %s, "
                "condition = %s, auto_close = %s, targets = %s, enabled = %s, updated_at = now() "
                f"WHERE id = %s RETURNING {_RULE_COLS}",
                (
                    data.appliance,
                    data.metric,
                    data.name,
                    data.severity,
                    Jsonb(msgspec.to_builtins(data.condition)),
                    data.auto_close,
                    data.targets,
                    data.enabled,
                    rule_id,
                ),
            )
        ).fetchone()
    assert new is not None
    return _rule(new)


@delete("/v1/alert-rules/{rule_id:int}", tags=["alerts"])
async def delete_rule(*, svc: Svc, who: Who, rule_id: RowId) -> None:
    """Retire a rule (customer_admin, ops): it stops being evaluated; its alerts stay."""
    await _visible_rule(svc, who, rule_id)
    _admin(who)
    async with svc.access.pool.connection() as conn:
        await conn.execute(
            "UPDATE alert_rules SET deleted_at = now(), enabled = false WHERE id = %s", (rule_id,)
        )


# -- alerts -----------------------------------------------------------------------------------

_ALERT_COLS = (
    "a.id, a.rule_id, a.site_id, a.appliance_id, a.metric, a.severity, a.state, a.reason, "
    "a.value, a.sample_ts, a.opened_at, a.acknowledged_at, a.acknowledged_by, "
    "a.acknowledge_note, a.resolved_at, a.resolved_by, a.resolve_note"
)


@get("/v1/alerts", tags=["alerts"])
async def list_alerts(
    *,
    svc: Svc,
    who: Who,
    site: Annotated[str | None, QueryParameter(pattern=r"^s[0-9]{3,12}$")] = None,
    appliance: Annotated[str | None, QueryParameter(pattern=r"^s[0-9]{3,12}-a[0-9]{3,12}$")] = None,
    alert_state: Annotated[AlertState | None, QueryParameter(name="state")] = None,
    severity: FromQuery[Severity | None] = None,
    rule_id: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
    since: FromQuery[dt.datetime | None] = None,
    until: FromQuery[dt.datetime | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    """Alerts the key may see, newest first, filtered by site, appliance, state, severity,
    rule and the time they opened (``since`` inclusive, ``until`` exclusive; UTC if naive)."""
    _no_vendors(who)
    if site is not None:
        await _site(svc, who, site)
    where = ["(%(ops)s OR a.tenant_id = %(tenant)s)"]
    params: dict[str, Any] = {"ops": who.role is Role.OPS, "tenant": who.tenant, "limit": limit}
    for column, value in (("site_id", site), ("appliance_id", appliance), ("state", alert_state),
                          ("severity", severity), ("rule_id", rule_id)):  # fmt: skip
        if value is not None:
            where.append(f"a.{column} = %({column})s")
            params[column] = value
    for name, op, when in (("since", ">=", since), ("until", "<", until)):
        if when is not None:
            if not 1970 <= when.year <= 2199:
                raise ValidationException(f"{name} must lie between 1970 and 2199")
            where.append(f"a.opened_at {op} %({name})s")
            params[name] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    async with svc.access.pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_ALERT_COLS} FROM alerts a WHERE {' AND '.join(where)} "
                "ORDER BY a.opened_at DESC, a.id DESC LIMIT %(limit)s",
                params,
            )
        ).fetchall()
    return [AlertOut(*r) for r in rows]


async def _alert(conn: Any, who: Principal, alert_id: int, *, lock: bool = False) -> AlertOut:
    _no_vendors(who)
    row = await (
        await conn.execute(
            f"SELECT {_ALERT_COLS}, a.tenant_id FROM alerts a WHERE a.id = %s"
            + (" FOR UPDATE" if lock else ""),
            (alert_id,),
        )
    ).fetchone()
    if row is None or (who.role is not Role.OPS and row[-1] != who.tenant):
        raise NotFoundException(_NOT_FOUND)
    events = await (
        await conn.execute(
            "SELECT action, actor, note, at FROM alert_events WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        )
    ).fetchall()
    out = AlertOut(*row[:-1])
    out.events = [AlertEvent(*e) for e in events]
    return out


@get("/v1/alerts/{alert_id:int}", tags=["alerts"])
async def get_alert(*, svc: Svc, who: Who, alert_id: RowId) -> AlertOut:
    """One alert with its history (who did what, when, with which note)."""
    async with svc.access.pool.connection() as conn:
        return await _alert(conn, who, alert_id)


async def _step(svc: Any, who: Principal, alert_id: int, action: str, note: str) -> AlertOut:
    allowed = {"acknowledged": ("open",), "resolved": ("open", "acknowledged")}[action]
    async with svc.access.pool.connection() as conn, conn.transaction():
        alert = await _alert(conn, who, alert_id, lock=True)
        if alert.state not in allowed:
            raise HTTPException(status_code=409, detail=f"alert {alert_id} is {alert.state}")
        prefix = "acknowledge" if action == "acknowledged" else "resolve"
        col = "acknowledged" if action == "acknowledged" else "resolved"
        await conn.execute(
            f"UPDATE alerts SET state = %s, {col}_at = clock_timestamp(), {col}_by = %s, "
            f"{prefix}_note = %s WHERE id = %s",
            (action, _actor(who), note, alert_id),
        )
        await conn.execute(
            "INSERT INTO alert_events (alert_id, action, actor, note) VALUES (%s, %s, %s, %s)",
            (alert_id, action, _actor(who), note),
        )
        return await _alert(conn, who, alert_id)


@post("/v1/alerts/{alert_id:int}/acknowledge", tags=["alerts"], status_code=200)
async def acknowledge(*, svc: Svc, who: Who, alert_id: RowId, data: JSONBody[StepIn]) -> AlertOut:
    """open → acknowledged, with a note."""
    return await _step(svc, who, alert_id, "acknowledged", data.note)


@post("/v1/alerts/{alert_id:int}/resolve", tags=["alerts"], status_code=200)
async def resolve(*, svc: Svc, who: Who, alert_id: RowId, data: JSONBody[StepIn]) -> AlertOut:
    """open or acknowledged → resolved, with a note."""
    return await _step(svc, who, alert_id, "resolved", data.note)


# -- notification targets ---------------------------------------------------------------------


@post("/v1/notification-targets", tags=["alerts"])
async def create_target(*, svc: Svc, who: Who, data: JSONBody[TargetIn]) -> TargetOut:
    """A webhook or e-mail target of the caller's tenant (ops: of ``tenant``). A webhook's
    signing secret is in this answer only."""
    _admin(who)
    tenant = who.tenant
    if data.tenant is not None and data.tenant != who.tenant:
        if who.role is not Role.OPS:
            raise NotFoundException(_NOT_FOUND)
        tenant = data.tenant
    secret = secrets.token_urlsafe(32) if data.kind == "webhook" else None
    async with svc.access.pool.connection() as conn:
        exists = await (
            await conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant,))
        ).fetchone()
        if exists is None:
            raise NotFoundException(_NOT_FOUND)
        row = await (
            await conn.execute(
                "INSERT INTO notification_targets (tenant_id, kind, address, secret) "
                "VALUES (%s, %s, %s, %s) RETURNING id, tenant_id, kind, address, created_at",
                (tenant, data.kind, data.address, secret),
            )
        ).fetchone()
    assert row is not None
    out = TargetOut(*row)
    out.secret = secret
    return out


@get("/v1/notification-targets", tags=["alerts"])
async def list_targets(*, svc: Svc, who: Who) -> list[TargetOut]:
    """The tenant's targets (ops: all); secrets are never shown again."""
    _no_vendors(who)
    async with svc.access.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id, tenant_id, kind, address, created_at FROM notification_targets "
                "WHERE deleted_at IS NULL AND (%s OR tenant_id = %s) ORDER BY id",
                (who.role is Role.OPS, who.tenant),
            )
        ).fetchall()
    return [TargetOut(*r) for r in rows]


@delete("/v1/notification-targets/{target_id:int}", tags=["alerts"])
async def delete_target(*, svc: Svc, who: Who, target_id: RowId) -> None:
    """Stop sending to a target (customer_admin, ops)."""
    _no_vendors(who)
    async with svc.access.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT tenant_id FROM notification_targets WHERE id = %s AND deleted_at IS NULL",
                (target_id,),
            )
        ).fetchone()
        if row is None or (who.role is not Role.OPS and row[0] != who.tenant):
            raise NotFoundException(_NOT_FOUND)
        _admin(who)
        await conn.execute(
            "UPDATE notification_targets SET deleted_at = now() WHERE id = %s", (target_id,)
        )


ROUTES = [create_rule, list_rules, get_rule, update_rule, delete_rule, list_alerts, get_alert,
          acknowledge, resolve, create_target, list_targets, delete_target]  # fmt: skip
