-- The last 30 days of archived telemetry per tenant and metric, joined with the registry.
-- Run: python -m cold query --config cold.toml --registry-dsn-env DERRICK_REGISTRY_DSN "$(cat this file)"
-- (tables telemetry_raw: the Parquet archive; sites, appliances: copied from the registry)
SELECT s.tenant_id,
       r.metric,
       count(*)               AS samples,
       count(DISTINCT r.node) AS appliances,
       avg(r.value)           AS mean,
       min(r.value)           AS min,
       max(r.value)           AS max
FROM telemetry_raw r
JOIN appliances a ON a.id = r.node
JOIN sites s ON s.id = a.site_id
WHERE r.ts >= current_date - INTERVAL 30 DAY
  AND r.device <> ''
GROUP BY s.tenant_id, r.metric
ORDER BY s.tenant_id, r.metric
