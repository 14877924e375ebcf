"""Monthly compliance reports on demand: the PDF, or its numbers as CSV.

``GET /v1/sites/{site_id}/reports/{month}`` (``month`` = ``YYYY-MM``, UTC) answers the PDF;
``?format=csv&table=daily|alerts`` the CSV tables. Customer keys only (viewer and admin):
vendor and ops keys get 403. A site of another tenant is 404, like one that does not exist.
The scheduled path is ``python -m api report`` (:mod:`api.__main__`), on the same code.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from litestar import Response, get
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import FromQuery, PathParameter

from api import report_pdf, reports
from api.app import SiteId, Svc, Who, _site
from api.keys import Role

PDF = "application/pdf"
CSV = "text/csv; charset=utf-8"
_CUSTOMER_ROLES = frozenset({Role.CUSTOMER_VIEWER, Role.CUSTOMER_ADMIN})

Month = Annotated[
    str,
    PathParameter(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="Month, YYYY-MM (UTC)"),
]


#: a report renders a month of a site (PDF or CSV): it counts as this many requests
REPORT_COST = 20


@get(
    "/v1/sites/{site_id:str}/reports/{month:str}",
    tags=["reports"],
    media_type=PDF,
    cost=REPORT_COST,
)
async def monthly_report(
    *,
    svc: Svc,
    who: Who,
    site_id: SiteId,
    month: Month,
    format: FromQuery[Literal["pdf", "csv"]] = "pdf",
    table: FromQuery[Literal["daily", "alerts"]] = "daily",
) -> Response[bytes]:
    """The monthly compliance report of a site: PDF (daily aggregates of the hot metrics with
    charts, data completeness, alert history), or one of its tables as CSV."""
    if who.role not in _CUSTOMER_ROLES:
        raise PermissionDeniedException("compliance reports are for customer keys")
    site = await _site(svc, who, site_id)
    async with svc.access.pool.connection() as pg, svc.reader.pool.connection() as qdb:
        try:
            report = await reports.gather(
                site, month, registry=pg, questdb=qdb, tables=svc.reader.tables, now=svc.now()
            )
        except reports.ReportError as exc:
            raise ValidationException(str(exc)) from exc
    name = f"{site_id}-{month}"
    if format == "csv":
        body = reports.CSV_TABLES[table](report)
        media, filename = CSV, f"{name}-{table}.csv"
    else:
        body = await asyncio.to_thread(report_pdf.render, report)
        media, filename = PDF, f"{name}.pdf"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


ROUTES = [monthly_report]
