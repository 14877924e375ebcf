"""Derrick's customer API: the registry in PostgreSQL, data endpoints over QuestDB, live values.

Modules:

- ``config``: the service's TOML configuration (``python -m api serve --config api.toml``).
- ``migrate``: plain SQL migrations (``api/migrations/NNNN_*.sql``) applied in order.
- ``keys``: API keys (shown once, stored as SHA-256) and roles.
- ``registry``: tenants, users, keys, sites, appliances, provisioning, catalogue sync.
- ``broker_auth``: MQTT credentials rendered for Mosquitto (password file + ACL) and EMQX.
- ``readings``: QuestDB reads (SQL from ``core.queries``), time windows in a named zone.
- ``app``: the Litestar application; ``ratelimit``: per-key token buckets;
  ``live``: a Sparkplug consumer feeding the SSE stream of hot values.

Errors (``api.errors``)::

    ApiError
    ├── ConfigError          the configuration file or an environment variable is wrong
    ├── MigrationError       a migration failed or the applied history does not match the files
    └── RegistryError        a registry operation was refused
        └── NotFoundError    no such (visible) object
"""
