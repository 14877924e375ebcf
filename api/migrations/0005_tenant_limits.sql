-- Per-tenant API rate limit: every key of a tenant shares this allowance, on top of each
-- key's own (a tenant cannot multiply its allowance by issuing more keys).
ALTER TABLE tenants
    ADD COLUMN rate_per_s double precision NOT NULL DEFAULT 50 CHECK (rate_per_s > 0),
    ADD COLUMN burst      integer NOT NULL DEFAULT 200 CHECK (burst > 0);
