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
