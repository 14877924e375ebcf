"""The evaluator's side of the alert tables in PostgreSQL (async psycopg).

Opening is ``INSERT ... ON CONFLICT DO NOTHING`` against the partial unique index
``alerts_one_unresolved (rule_id, scope_key) WHERE state <> 'resolved'``; closing is an
``UPDATE`` of the unresolved row. Both are idempotent, so a transition applied twice (a
restart, a replay, two evaluators) changes nothing the second time. The alert, its history
row and its notification outbox rows are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from core.alerting import Rule, Transition, decode_condition

log = logging.getLogger(__name__)

_RULES = """
SELECT id, site_id, appliance_id, metric, condition::text, auto_close FROM alert_rules
WHERE enabled AND deleted_at IS NULL ORDER BY id
"""

_OPEN_SCOPES = "SELECT rule_id, scope_key FROM alerts WHERE state <> 'resolved'"

_OPEN = """
INSERT INTO alerts (rule_id, tenant_id, site_id, appliance_id, metric, scope_key, severity,
                    reason, value, sample_ts)
SELECT r.id, r.tenant_id, r.site_id, %(appliance)s, %(metric)s, %(scope)s, r.severity,
       %(reason)s, %(value)s, %(ts)s
FROM alert_rules r WHERE r.id = %(rule)s
ON CONFLICT (rule_id, scope_key) WHERE state <> 'resolved' DO NOTHING
RETURNING id
"""

_CLEAR = """
UPDATE alerts SET state = 'resolved', resolved_at = clock_timestamp(), resolved_by = %(actor)s,
                  resolve_note = %(reason)s
WHERE rule_id = %(rule)s AND scope_key = %(scope)s AND state <> 'resolved'
RETURNING id
"""

_EVENT = "INSERT INTO alert_events (alert_id, action, actor, note) VALUES (%s, %s, %s, %s)"

# One outbox row per live target of the rule (of the rule's own tenant).
_ENQUEUE = """
INSERT INTO notification_deliveries (target_id, alert_id, event, body)
SELECT t.id, a.id, %(event)s,
       jsonb_build_object(
           'event', %(event)s::text, 'alert_id', a.id, 'rule_id', r.id, 'rule', r.name,
           'severity', a.severity, 'state', a.state, 'site', a.site_id,
           'appliance', a.appliance_id, 'metric', a.metric, 'value', a.value,
           'reason', a.reason, 'note', %(note)s::text, 'sample_ts', a.sample_ts,
           'opened_at', a.opened_at, 'resolved_at', a.resolved_at)
FROM alerts a
JOIN alert_rules r ON r.id = a.rule_id
JOIN notification_targets t
  ON t.id = ANY (r.targets) AND t.tenant_id = r.tenant_id AND t.deleted_at IS NULL
WHERE a.id = %(alert)s
"""

_CHECKPOINT = """
INSERT INTO alert_evaluator_checkpoints (evaluator, sample_ts) VALUES (%s, %s)
ON CONFLICT (evaluator) DO UPDATE
SET sample_ts = greatest(alert_evaluator_checkpoints.sample_ts, excluded.sample_ts),
    updated_at = now()
"""

EVALUATOR_ACTOR = "evaluator"


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class AlertStore:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def rules(self) -> list[Rule]:
        """Enabled rules; a stored condition that no longer decodes is skipped (warned)."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_RULES)).fetchall()
        out = []
        for rid, site, appliance, metric, condition, auto_close in rows:
            try:
                out.append(
                    Rule(
                        int(rid),
                        site,
                        appliance,
                        metric,
                        decode_condition(condition),
                        bool(auto_close),
                    )
                )
            except (msgspec.ValidationError, ValueError) as exc:
                log.warning("alert rule %s skipped: %s", rid, exc)
        return out

    async def open_scopes(self) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_OPEN_SCOPES)).fetchall()
        return [(int(r), str(s)) for r, s in rows]

    async def apply(self, t: Transition, evaluator: str | None = None) -> int | None:
        """Write one transition; the alert id if it changed something, else None. With
        ``evaluator``, its checkpoint moves to the sample's time in the same transaction, so
        a replay after a restart never applies a transition twice."""
        params = {
            "rule": t.rule_id,
            "scope": t.scope_key,
            "appliance": t.appliance,
            "metric": t.metric,
            "reason": t.reason,
            "value": t.value,
            "ts": _utc(t.ts),
            "actor": EVALUATOR_ACTOR,
        }
        async with self._pool.connection() as conn, conn.transaction():
            if evaluator is not None:
                await conn.execute(_CHECKPOINT, (evaluator, params["ts"]))
            row = await (
                await conn.execute(_OPEN if t.kind == "open" else _CLEAR, params)
            ).fetchone()
            if row is None:
                return None
            alert_id = int(row[0])
            action = "opened" if t.kind == "open" else "resolved"
            await conn.execute(_EVENT, (alert_id, action, EVALUATOR_ACTOR, t.reason))
            await conn.execute(
                _ENQUEUE, {"event": f"alert.{action}", "alert": alert_id, "note": t.reason}
            )
        log.info("alert %s %s: rule %s, %s: %s", alert_id, action, t.rule_id, t.scope_key, t.reason)
        return alert_id

    async def checkpoint(self, evaluator: str) -> int | None:
        """The newest sample time (ms) the evaluator handled, if it ever ran."""
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT sample_ts FROM alert_evaluator_checkpoints WHERE evaluator = %s",
                    (evaluator,),
                )
            ).fetchone()
        return None if row is None else int(row[0].timestamp() * 1000)

    async def save_checkpoint(self, evaluator: str, ts_ms: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_CHECKPOINT, (evaluator, _utc(ts_ms)))
