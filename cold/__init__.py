"""The cold path: nightly rollups and completeness, the Parquet archive, DuckDB analytics, and
verification and replay of the ingest workers' audit archive (format in ``core.audit``)."""
