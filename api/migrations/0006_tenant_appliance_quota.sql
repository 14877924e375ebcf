-- Per-tenant quota on provisioned appliances (the contract's size): provisioning beyond it is
-- refused with a clear error. NULL: no quota. With the ingest's per-node quota on live data
-- (metrics/s per node) it also bounds the tenant's live data volume.
ALTER TABLE tenants
    ADD COLUMN max_appliances integer CHECK (max_appliances IS NULL OR max_appliances >= 0);
