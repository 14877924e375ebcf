"""Derrick's alert service: rules evaluated on the live Sparkplug stream, the alert lifecycle
in PostgreSQL, notifications (signed webhooks, e-mail) through an outbox.

Modules: ``config`` (TOML), ``store`` (PostgreSQL), ``evaluator`` (MQTT + QuestDB catch-up),
``notify`` (webhooks, SMTP), ``__main__`` (``python -m alerts run --config alerts.toml``).
Rules and their evaluation are pure and live in :mod:`core.alerting`; Sparkplug decoding
for consumers in :mod:`core.livestream`.

Exceptions::

    AlertsError                 every error this package raises on purpose
    └── DeliveryError           one notification attempt failed (retried, then dead-lettered)
"""

from __future__ import annotations


class AlertsError(Exception):
    """Base of the alert service's errors."""


class DeliveryError(AlertsError):
    """A notification attempt failed; the message says why (never the secret)."""
