-- Alerts: rules per site, the alert lifecycle with its history, notification targets and
-- the delivery outbox, the evaluator's checkpoint. Written by the API (rules, targets,
-- acknowledge/resolve) and by the alert evaluator (`python -m alerts run`).

-- Where notifications go: a signed webhook or an e-mail address, per tenant. The webhook
-- secret signs the body (HMAC-SHA256); it is shown once when the target is created.
CREATE TABLE notification_targets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    kind        text NOT NULL CHECK (kind IN ('webhook', 'email')),
    address     text NOT NULL CHECK (length(address) BETWEEN 3 AND 2000),
    secret      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CHECK ((kind = 'webhook') = (secret IS NOT NULL))
);
CREATE INDEX notification_targets_tenant ON notification_targets (tenant_id);

-- A rule watches a site, optionally one appliance, usually one metric. `condition` is the
-- JSON of core.alerting.Condition (threshold, rate_of_change, no_data, kpi), checked by the
-- API before it is stored. Rules are never deleted (their alerts keep pointing at them).
CREATE TABLE alert_rules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    site_id     text NOT NULL REFERENCES sites (id),
    appliance_id text REFERENCES appliances (id),
    metric      text,
    name        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    condition   jsonb NOT NULL,
    auto_close  boolean NOT NULL DEFAULT true,
    targets     bigint[] NOT NULL DEFAULT '{}',
    enabled     boolean NOT NULL DEFAULT true,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX alert_rules_site ON alert_rules (site_id);

-- One alert per rule and scope (an appliance, or appliance + metric) that is not resolved:
-- the partial unique index is what makes opening idempotent (INSERT ... ON CONFLICT DO
-- NOTHING), across evaluator restarts and redeliveries.
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES alert_rules (id),
    tenant_id       text NOT NULL REFERENCES tenants (id),
    site_id         text NOT NULL REFERENCES sites (id),
    appliance_id    text NOT NULL,
    metric          text,
    scope_key       text NOT NULL,
    severity        text NOT NULL,
    state           text NOT NULL DEFAULT 'open'
                    CHECK (state IN ('open', 'acknowledged', 'resolved')),
    reason          text NOT NULL,
    value           double precision,
    sample_ts       timestamptz NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    acknowledge_note text,
    resolved_at     timestamptz,
    resolved_by     text,
    resolve_note    text
);
CREATE UNIQUE INDEX alerts_one_unresolved ON alerts (rule_id, scope_key)
    WHERE state <> 'resolved';
CREATE INDEX alerts_site_opened ON alerts (site_id, opened_at DESC);
CREATE INDEX alerts_tenant_opened ON alerts (tenant_id, opened_at DESC);

-- Every step of every alert: who, when, a note.
CREATE TABLE alert_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    bigint NOT NULL REFERENCES alerts (id),
    action      text NOT NULL CHECK (action IN ('opened', 'acknowledged', 'resolved')),
    actor       text NOT NULL,
    note        text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, id);

-- The notification outbox, filled in the same transaction as the alert change it reports.
CREATE TABLE notification_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id       bigint NOT NULL REFERENCES notification_targets (id),
    alert_id        bigint NOT NULL REFERENCES alerts (id),
    event           text NOT NULL,
    body            jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- The newest live sample time an evaluator has handled: where its catch-up from QuestDB
-- starts after a restart.
CREATE TABLE alert_evaluator_checkpoints (
    evaluator   text PRIMARY KEY,
    sample_ts   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
