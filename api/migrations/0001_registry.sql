-- Derrick registry: tenants, users, API keys, sites, appliances, devices, metrics,
-- provisioning state and MQTT credentials. Applied once by `python -m api migrate`.

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9-]{1,62}$'),
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'vendor', 'operator')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    email       text NOT NULL UNIQUE,
    role        text NOT NULL
                CHECK (role IN ('customer_viewer', 'customer_admin', 'ops', 'vendor')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- The key itself is shown once; only its SHA-256 is kept. key_id is the public prefix
-- used to find the row (dk_<key_id>_<secret>).
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    user_id      bigint NOT NULL REFERENCES users (id),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    label        text NOT NULL DEFAULT '',
    rate_per_s   double precision NOT NULL DEFAULT 10 CHECK (rate_per_s > 0),
    burst        integer NOT NULL DEFAULT 40 CHECK (burst > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE sites (
    id          text PRIMARY KEY CHECK (id ~ '^s[0-9]{3,}$'),
    tenant_id   text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL DEFAULT '',
    timezone    text NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_tenant ON sites (tenant_id);

-- Sites a vendor tenant may read.
CREATE TABLE site_shares (
    site_id          text NOT NULL REFERENCES sites (id),
    vendor_tenant_id text NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (site_id, vendor_tenant_id)
);

CREATE TABLE appliances (
    id              text PRIMARY KEY CHECK (id ~ '^s[0-9]{3,}-a[0-9]{3,}$'),
    site_id         text NOT NULL REFERENCES sites (id),
    state           text NOT NULL DEFAULT 'discovered'
                    CHECK (state IN ('discovered', 'provisioned', 'retired')),
    first_seen      timestamptz,
    last_birth      timestamptz,
    provisioned_at  timestamptz,
    retired_at      timestamptz,
    CHECK (split_part(id, '-', 1) = site_id)
);
CREATE INDEX appliances_site ON appliances (site_id);

-- The broker credential of a provisioned appliance: PBKDF2-HMAC-SHA512 of a random
-- password (shown once). Rendered as a Mosquitto password-file entry and as an EMQX
-- built-in-database user. Deleted when the appliance is retired.
CREATE TABLE mqtt_credentials (
    appliance_id text PRIMARY KEY REFERENCES appliances (id),
    username     text NOT NULL UNIQUE,
    salt         text NOT NULL,
    iterations   integer NOT NULL CHECK (iterations >= 1000),
    dk_sha512    bytea NOT NULL CHECK (length(dk_sha512) = 64),
    issued_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    appliance_id text NOT NULL REFERENCES appliances (id),
    id           text NOT NULL,
    PRIMARY KEY (appliance_id, id)
);

CREATE TABLE metrics (
    appliance_id text NOT NULL,
    device_id    text NOT NULL,
    name         text NOT NULL,
    datatype     text NOT NULL,
    unit         text,
    hot          boolean NOT NULL,
    last_birth   timestamptz NOT NULL,
    PRIMARY KEY (appliance_id, device_id, name),
    FOREIGN KEY (appliance_id, device_id) REFERENCES devices (appliance_id, id)
);

-- Broker accounts of cloud services (ingest workers, the API's live consumer): full access
-- to the Sparkplug namespace. Same hash as mqtt_credentials.
CREATE TABLE mqtt_service_accounts (
    username    text PRIMARY KEY CHECK (username ~ '^[a-z][a-z0-9-]{1,62}$'),
    salt        text NOT NULL,
    iterations  integer NOT NULL CHECK (iterations >= 1000),
    dk_sha512   bytea NOT NULL CHECK (length(dk_sha512) = 64),
    issued_at   timestamptz NOT NULL DEFAULT now()
);
