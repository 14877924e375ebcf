-- Broker service accounts get a role instead of full access to the namespace:
-- primary_host (ingest: read all, publish STATE, NCMD/DCMD and its KPI node), reader (the
-- API's live feed: read only), site_gateway (a site's bridge: its site's node topics up,
-- commands and STATE down). Existing accounts were all ingest-like: primary_host.
ALTER TABLE mqtt_service_accounts
    ADD COLUMN role text NOT NULL DEFAULT 'primary_host'
        CHECK (role IN ('primary_host', 'reader', 'site_gateway')),
    ADD COLUMN site_id text REFERENCES sites (id),
    ADD CONSTRAINT mqtt_service_accounts_gateway_site
        CHECK ((role = 'site_gateway') = (site_id IS NOT NULL));

-- What EMQX asks the registry (broker/emqx/emqx.conf). One credential row per broker user,
-- in the form of EMQX's pbkdf2 authenticator (hex of the derived key, salt string).
CREATE VIEW mqtt_authn AS
    SELECT username, encode(dk_sha512, 'hex') AS password_hash, salt, iterations
    FROM mqtt_credentials
    UNION ALL
    SELECT username, encode(dk_sha512, 'hex'), salt, iterations
    FROM mqtt_service_accounts;

-- The authorization rules, the same as api.broker_auth renders for Mosquitto's acl_file
-- (tests/broker/test_emqx_registry.py holds them equal). action: publish | subscribe.
CREATE VIEW mqtt_acl AS
    SELECT c.username, 'allow'::text AS permission, 'publish'::text AS action,
           'spBv1.0/' || a.site_id || '/' || t.kind || '/' || a.id || t.suffix AS topic
    FROM mqtt_credentials c
    JOIN appliances a ON a.id = c.appliance_id
    CROSS JOIN (VALUES ('NBIRTH', ''), ('NDATA', ''), ('NDEATH', ''),
                       ('DBIRTH', '/+'), ('DDATA', '/+'), ('DDEATH', '/+')) AS t (kind, suffix)
    UNION ALL
    SELECT c.username, 'allow', 'subscribe',
           'spBv1.0/' || a.site_id || '/' || t.kind || '/' || a.id || t.suffix
    FROM mqtt_credentials c
    JOIN appliances a ON a.id = c.appliance_id
    CROSS JOIN (VALUES ('NCMD', ''), ('DCMD', '/+')) AS t (kind, suffix)
    UNION ALL
    SELECT c.username, 'allow', 'subscribe', 'spBv1.0/STATE/+'
    FROM mqtt_credentials c
    UNION ALL
    SELECT s.username, 'allow', r.action, r.topic
    FROM mqtt_service_accounts s
    CROSS JOIN (VALUES ('subscribe', 'spBv1.0/#'), ('publish', 'spBv1.0/STATE/+'),
                       ('publish', 'spBv1.0/+/NCMD/+'), ('publish', 'spBv1.0/+/DCMD/+/+'),
                       ('publish', 'spBv1.0/derrick-cloud/#')) AS r (action, topic)
    WHERE s.role = 'primary_host'
    UNION ALL
    SELECT s.username, 'allow', 'subscribe', 'spBv1.0/#'
    FROM mqtt_service_accounts s
    WHERE s.role = 'reader'
    UNION ALL
    SELECT s.username, 'allow', r.action, 'spBv1.0/' || s.site_id || r.topic
    FROM mqtt_service_accounts s
    CROSS JOIN (VALUES ('publish', '/NBIRTH/+'), ('publish', '/NDATA/+'),
                       ('publish', '/NDEATH/+'), ('publish', '/DBIRTH/+/+'),
                       ('publish', '/DDATA/+/+'), ('publish', '/DDEATH/+/+'),
                       ('subscribe', '/NCMD/+'), ('subscribe', '/DCMD/+/+')) AS r (action, topic)
    WHERE s.role = 'site_gateway'
    UNION ALL
    SELECT s.username, 'allow', 'subscribe', 'spBv1.0/STATE/+'
    FROM mqtt_service_accounts s
    WHERE s.role = 'site_gateway';
