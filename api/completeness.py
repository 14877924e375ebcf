"""``GET /v1/sites/{site_id}/completeness``: the nightly per-node completeness report.

The nightly cold job (``python -m cold nightly``) writes one row per node and UTC day into
QuestDB's ``completeness_daily`` (``core.cold_tables``); this endpoint reads a day of one
site, for keys that may see the site. A day the job has not processed yet gives ``[]``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter

from api.access import Principal


class NodeCompleteness(msgspec.Struct, frozen=True):
    day: dt.date
    node: str
    expected: int
    received: int
    ratio: float
    alarm_minutes: int
    gaps: list[list[str]]
    gap_minutes: int
    longest_gap_minutes: int
    late: int


@get("/v1/sites/{site_id:str}/completeness", tags=["data"])
async def site_completeness(
    *,
    svc: NamedDependency[Any],  # api.app.Services (not imported: app imports this module)
    who: NamedDependency[Principal],
    site_id: Annotated[str, Parameter(pattern=r"^s[0-9]{3,12}$", description="Site id")],
    day: Annotated[dt.date | None, Parameter(description="UTC day (default: yesterday)")] = None,
) -> list[NodeCompleteness]:
    """Per node of the site for one UTC day: samples expected (configured rates, alarm
    periods), received, gaps of at least the configured length, late arrivals."""
    if await svc.access.site(who, site_id) is None:
        raise NotFoundException("not found")
    day = day or (svc.now().astimezone(dt.UTC).date() - dt.timedelta(days=1))
    if not 2000 <= day.year <= 2200:
        raise ValidationException("day must lie between 2000 and 2200")
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        rows = await svc.reader.completeness(site_id, start)
    except psycopg.errors.DatabaseError as exc:
        if "does not exist" in str(exc):
            return []  # the nightly job has never run
        raise
    return [
        NodeCompleteness(day, n, e, r, ratio, a, json.loads(g or "[]"), gm, lg, late)
        for n, e, r, ratio, a, g, gm, lg, late in rows
    ]
