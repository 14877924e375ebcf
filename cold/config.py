"""The cold job's configuration: one TOML file, validated by msgspec.

Secrets never live in the file: the QuestDB PGWire DSN and HTTP URL (which may carry
credentials) come from the environment variables it names, like the ingest worker's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from core.config import convert, read_bytes, toml_to_builtins

PositiveInt = Annotated[int, Meta(gt=0)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class QuestDBSettings(_Strict, kw_only=True, frozen=True):
    #: Environment variable holding the PGWire DSN (SQL: aggregates, rollups, DDL).
    pg_dsn_env: str = "DERRICK_QUESTDB_PG"
    #: Environment variable holding the HTTP base URL (``/exp`` Parquet export).
    http_url_env: str = "DERRICK_QUESTDB_HTTP"
    #: Environment variable holding the ILP configuration string (rebuild writes with it).
    ilp_conf_env: str = "DERRICK_QUESTDB_ILP"
    table_prefix: str = ""


class ArchiveSettings(_Strict, kw_only=True, frozen=True):
    #: Root of the ingest workers' audit chains (``[audit] directory`` of the ingest config).
    audit_directory: Path
    #: The Primary Host id the archived messages were received by (its STATE topic).
    primary_host_id: str = "derrick"
    #: Where the Parquet files go: a local directory, or ``s3://bucket/prefix`` (pyarrow's
    #: S3 filesystem; credentials from the usual AWS environment variables / instance role).
    parquet_uri: str
    #: S3-compatible endpoint override (MinIO, Ceph ...), e.g. ``https://s3.example:9000``.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    #: Parquet compression codec and level.
    compression: str = "zstd"
    compression_level: Annotated[int, Meta(ge=1, le=22)] = 9


class NodeRates(_Strict, kw_only=True, frozen=True):
    """A node's configured sampling rates (the edge's ``[sampling]``), values per minute."""

    normal_per_min: PositiveInt = 150
    alarm_per_min: PositiveInt = 3000


class CompletenessSettings(_Strict, kw_only=True, frozen=True):
    #: Rates of every node unless overridden (defaults = the edge agent's defaults).
    default: NodeRates = msgspec.field(default_factory=NodeRates)
    #: Per-site or per-node overrides: key ``s017`` or ``s017-a042`` (node wins).
    overrides: dict[str, NodeRates] = msgspec.field(default_factory=dict)
    #: A run of at least this many minutes without any sample is a gap.
    gap_minutes: PositiveInt = 5
    #: A sample received more than this after its source time is a late arrival.
    late_after_s: PositiveInt = 60
    #: The node metric whose value says the sampling mode ("normal" / "alarm").
    mode_metric: str = "Derrick/Sampling Mode"
    #: Sites left out of the report (the KPI nodes' group: derived data, no sampling rate).
    exclude_sites: list[str] = msgspec.field(default_factory=lambda: ["derrick-cloud"])

    def rates(self, site: str, node: str) -> NodeRates:
        return self.overrides.get(node) or self.overrides.get(site) or self.default


class RetentionSettings(_Strict, kw_only=True, frozen=True):
    #: QuestDB keeps raw data this many days (``ALTER TABLE ... SET TTL``); older days are
    #: answered from the Parquet archive. 0 = keep forever (no TTL).
    raw_days: Annotated[int, Meta(ge=0)] = 30
    #: The nightly job fails loudly when a day this close to the TTL is not archived yet.
    unarchived_margin_days: Annotated[int, Meta(ge=1)] = 7


class NightlySettings(_Strict, kw_only=True, frozen=True):
    #: Directory for progress state and the freshness marker (``last-success``).
    state_directory: Path
    #: Also re-check (and re-export if QuestDB changed) this many days before the one run:
    #: late arrivals of a long outage land in days already exported.
    recheck_days: Annotated[int, Meta(ge=0)] = 3
    #: A Prometheus text file (node-exporter textfile collector) rewritten after every
    #: successful run: ``derrick_cold_last_success_timestamp_seconds`` and friends, the
    #: series the ``NightlyJobLate`` alert watches. Unset: not written.
    metrics_textfile: Path | None = None


class ColdConfig(_Strict, kw_only=True, frozen=True):
    archive: ArchiveSettings
    nightly: NightlySettings
    questdb: QuestDBSettings = msgspec.field(default_factory=QuestDBSettings)
    completeness: CompletenessSettings = msgspec.field(default_factory=CompletenessSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)


def parse_config(text: bytes | str, *, source: str = "<config>") -> ColdConfig:
    return convert(toml_to_builtins(text, source=source), ColdConfig, source=source)


def load_config(path: Path) -> ColdConfig:
    return parse_config(read_bytes(path), source=str(path))
