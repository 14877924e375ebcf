"""Which rollup view a query sums from: exact for the zone's calendar and the window's ends."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from core import queries
from core.tables import TableSet

T = TableSet("t_")


@pytest.mark.parametrize(
    ("tz", "whole"),
    [
        ("UTC", True),
        ("America/Chicago", True),  # -6/-5
        ("Europe/London", True),
        ("Asia/Kolkata", False),  # +5:30
        ("Asia/Kathmandu", False),  # +5:45
        ("America/St_Johns", False),  # -3:30/-2:30
        ("Australia/Adelaide", False),  # +9:30/+10:30
        ("Australia/Lord_Howe", False),  # +10:30, +11 in summer: whole hours half the year
        ("America/Caracas", False),  # -4:30 from 2007 to 2016 only
    ],
)
def test_whole_hour_zones(tz: str, whole: bool) -> None:
    assert queries.whole_hour_zone(tz) is whole


@pytest.mark.parametrize(
    ("bucket", "tz", "view"),
    [
        ("1m", "UTC", "t_telemetry_1m"),
        ("30m", "Asia/Kolkata", "t_telemetry_1m"),
        ("1h", "America/Chicago", "t_telemetry_1h"),
        ("1d", "America/Chicago", "t_telemetry_1h"),
        ("1h", "Asia/Kolkata", "t_telemetry_1m"),
        ("1d", "Asia/Kolkata", "t_telemetry_1m"),
        ("1M", "America/St_Johns", "t_telemetry_1m"),
    ],
)
def test_series_reads_the_view_exact_for_the_zone(bucket: str, tz: str, view: str) -> None:
    sql = queries.series(T, bucket, tz)
    assert f"FROM {view} " in sql
    # 1-minute buckets are the view's rows; the others are re-sampled on the zone's calendar
    assert ("SAMPLE BY" in sql) is (bucket != "1m")


def test_an_unknown_bucket_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="bucket '1w' is not one of 1m, 5m"):
        queries.series(T, "1w", "UTC")


def _local(y: int, m: int, d: int, tz: str) -> dt.datetime:
    return dt.datetime(y, m, d, tzinfo=zoneinfo.ZoneInfo(tz)).astimezone(dt.UTC)


def test_window_view_needs_whole_hours_at_both_ends() -> None:
    chicago = _local(2026, 11, 1, "America/Chicago"), _local(2026, 11, 2, "America/Chicago")
    kolkata = _local(2026, 11, 1, "Asia/Kolkata"), _local(2026, 11, 2, "Asia/Kolkata")
    assert queries.window_view(T, *chicago).name == "t_telemetry_1h"
    assert queries.window_view(T, *kolkata).name == "t_telemetry_1m"  # midnight is 18:30 UTC
    now = dt.datetime(2026, 11, 2, 7, 13, 5, tzinfo=dt.UTC)
    assert queries.window_view(T, chicago[0], now).name == "t_telemetry_1m"
    assert queries.window_view(T, chicago[0], None).name == "t_telemetry_1h"  # up to the present
    assert queries.window_view(T, kolkata[0], None).name == "t_telemetry_1m"
    sql = queries.window_totals(T, T.telemetry_1m)
    assert "FROM t_telemetry_1m " in sql and "GROUP BY device, metric" in sql
    with pytest.raises(ValueError, match="not a rollup view"):
        queries.window_totals(T, T.latest)
