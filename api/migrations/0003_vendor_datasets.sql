-- Vendor datasets: which component type each metric (sensor tag) belongs to, and which
-- component types a vendor tenant is shared. A vendor reads the daily aggregates of those
-- metrics on the sites shared with it (site_shares), pseudonymised.

CREATE TABLE metric_component_types (
    metric         text PRIMARY KEY,
    component_type text NOT NULL CHECK (component_type ~ '^[a-z][a-z0-9_]{1,62}$')
);

INSERT INTO metric_component_types (metric, component_type) VALUES
    ('DEPTH', 'drilling'), ('HDTH', 'drilling'), ('ROP', 'drilling'),
    ('WOB', 'drawworks'), ('HKLD', 'drawworks'), ('BLKPOS', 'drawworks'),
    ('RPM', 'top_drive'), ('TQ', 'top_drive'),
    ('SPP', 'mud_pump'), ('FLWI', 'mud_pump'),
    ('MW', 'mud_system'), ('PIT', 'mud_system'),
    ('GAS', 'gas_detection'), ('H2S', 'gas_detection'),
    ('VIB', 'bha'), ('TEMP', 'bha');

CREATE TABLE vendor_component_shares (
    vendor_tenant_id text NOT NULL REFERENCES tenants (id),
    component_type   text NOT NULL,
    PRIMARY KEY (vendor_tenant_id, component_type)
);
