"""Vendor datasets: daily aggregates of the metrics of the component types shared with a
vendor, on the sites shared with it, pseudonymised, as Parquet.

A vendor key sees a metric when the site is in ``site_shares`` for its tenant and the
metric's component type (``metric_component_types``) is in ``vendor_component_shares``.
Sites and appliances appear only as keyed pseudonyms (:class:`core.pseudonym.Pseudonymiser`,
key from the API's ``[vendor] pseudonym_key_file``); device ids (which may name a customer's
OPC UA server) appear only as a pseudonym of the appliance's device, so that two devices of
one appliance with the same metric (two mud pumps) stay two series. Columns: ``site``,
``appliance``, ``device`` (pseudonyms), ``component_type``, ``metric``, ``day`` (UTC date),
``avg``, ``min``, ``max``, ``count``; rows sorted, so the same inputs give the same table.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
from litestar import Response, get
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.params import QueryParameter

from api.app import Svc, Who
from api.keys import Role
from core.pseudonym import Pseudonymiser

PARQUET = "application/vnd.apache.parquet"
MAX_DAYS = 366

_SCHEMA = pa.schema(
    [
        ("site", pa.string()),
        ("appliance", pa.string()),
        ("device", pa.string()),
        ("component_type", pa.string()),
        ("metric", pa.string()),
        ("day", pa.date32()),
        ("avg", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("count", pa.int64()),
    ]
)

_SHARED = """
SELECT sh.site_id FROM site_shares sh WHERE sh.vendor_tenant_id = %(tenant)s ORDER BY 1
"""
_METRICS = """
SELECT m.metric, m.component_type FROM metric_component_types m
JOIN vendor_component_shares v ON v.component_type = m.component_type
WHERE v.vendor_tenant_id = %(tenant)s
"""


def to_parquet(rows: list[tuple[object, ...]]) -> bytes:
    columns: list[tuple[object, ...]] = (
        list(zip(*rows, strict=True)) if rows else [() for _ in _SCHEMA]
    )
    table = pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, _SCHEMA, strict=True)],
        schema=_SCHEMA,
    )
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", store_schema=False)
    return out.getvalue()


#: a dataset reads up to a year of every shared site: it counts as this many requests
DATASET_COST = 20


@get("/v1/vendor/datasets/daily", tags=["vendor"], media_type=PARQUET, cost=DATASET_COST)
async def vendor_daily_dataset(
    *,
    svc: Svc,
    who: Who,
    start: Annotated[dt.date, QueryParameter(description="first UTC day")],
    end: Annotated[dt.date, QueryParameter(description="day after the last")],
) -> Response[bytes]:
    """Daily aggregates of the shared metrics as Parquet (vendor keys only)."""
    if who.role is not Role.VENDOR:
        raise PermissionDeniedException("vendor datasets are for vendor keys")
    key = svc.vendor_key
    if key is None:
        raise HTTPException(status_code=501, detail="vendor datasets not configured")
    if not (1970 <= start.year <= 2199 and 1970 <= end.year <= 2199):
        raise ValidationException("start/end must lie between 1970 and 2199")
    if not start < end or (end - start).days > MAX_DAYS:
        raise ValidationException(f"start must be before end, at most {MAX_DAYS} days apart")
    params = {"tenant": who.tenant}
    async with svc.access.pool.connection() as conn:
        sites = [r[0] for r in await (await conn.execute(_SHARED, params)).fetchall()]
        metrics = dict(await (await conn.execute(_METRICS, params)).fetchall())
    pseudonym = Pseudonymiser(key, f"{who.tenant}|daily|{start}|{end}")
    lo = dt.datetime.combine(start, dt.time(), dt.UTC)
    hi = dt.datetime.combine(end, dt.time(), dt.UTC)
    rows: list[tuple[object, ...]] = []
    for site in sites if metrics else []:
        for ts, node, device, metric, avg, lo_v, hi_v, count in await svc.reader.daily_of_site(
            site, lo, hi
        ):
            component = metrics.get(metric)
            if component is None:
                continue
            day = ts.date()
            rows.append(
                (
                    pseudonym("site", site),
                    pseudonym("appliance", node),
                    pseudonym("device", f"{node}/{device}"),
                    component,
                    metric,
                    day,
                    avg,
                    lo_v,
                    hi_v,
                    int(count),
                )
            )
    rows.sort(key=lambda r: (str(r[0]), str(r[1]), str(r[2]), str(r[4]), str(r[5])))
    return Response(
        to_parquet(rows),
        media_type=PARQUET,
        headers={"Content-Disposition": f'attachment; filename="daily-{start}-{end}.parquet"'},
    )


ROUTES = [vendor_daily_dataset]
