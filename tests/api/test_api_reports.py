"""Monthly compliance reports on real PostgreSQL and QuestDB: a known November 2026 of site
s301 (two appliances with gaps and a burst, a third that sent nothing, a cold metric, samples
just outside the month), alerts around the month. The expected daily aggregates and completeness
are computed here in plain Python from the samples the test writes (:func:`expected_days`),
not by QuestDB or ``api.reports``; the CSV and the numbers in the PDF's text must equal them.
Two renders give the same bytes, every series page carries its chart (an image that draws
the data, seen by rendering the page), access is tenant-scoped and customer-only, and the
CLI of the systemd timer writes the same files."""

from __future__ import annotations

import asyncio
import configparser
import csv
import datetime as dt
import io
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image, ImageChops
from psycopg import sql
from questdb import Sender, TimestampMicros, TimestampNanos

from api import __main__ as cli
from api import keys, migrate, registry
from core.tables import TableSet
from harness import Postgres, QuestDB

from . import world as w

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
MONTH = "2026-11"
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
DAYS = [(START + dt.timedelta(days=i)).date() for i in range(30)]
GAP_DAY = dt.date(2026, 11, 10)  # s301-a002 sends nothing that day
SHORT_DAY = dt.date(2026, 11, 20)  # s301-a001 ROP silent from 00:00 to 06:00
BURST_DAY = dt.date(2026, 11, 25)  # s301-a002 ROP: 24 samples, all between 08:00 and 10:00
NODES = ("s301-a001", "s301-a002")
REPORT = f"/v1/sites/s301/reports/{MONTH}"
# (appliance, metric, unit, hot) of the births the test writes
CATALOGUE = (
    *((n, "ROP", "ft/h", True) for n in NODES),
    *((n, "WOB", "klbf", True) for n in NODES),
    ("s301-a001", "Temp", "degC", False),  # cold: not in the report
    ("s301-a003", "WOB", "klbf", True),  # born, then silent all month
    ("s302-a001", "ROP", "ft/h", True),  # the other tenant's site
)
# the report's series: s301's hot metrics, sorted by appliance, device, metric
SERIES = sorted((n, "daq", m) for n, m, _, hot in CATALOGUE if hot and n.startswith("s301-"))
UNITS = {m: u for _, m, u, _ in CATALOGUE}


def value(node: str, metric: str, t: dt.datetime) -> float:
    base = 10.0 if metric == "ROP" else 20.0
    return base + (t.day * 24 + t.hour) % 7 + (0.25 if node.endswith("2") else 0.0)


def samples() -> Iterator[tuple[str, str, dt.datetime]]:
    """(node, metric, time): hourly at hh:15 (WOB also at hh:45 on odd days), with the gaps
    and the burst (as many samples as hours in a day, but in two hours: counting samples is
    not counting hours), plus one sample on each side of the month."""
    for node in NODES:
        for metric in ("ROP", "WOB"):
            yield node, metric, START - dt.timedelta(minutes=30)
            yield node, metric, START + dt.timedelta(days=30, minutes=30)
            burst = node == "s301-a002" and metric == "ROP"
            if burst:
                eight = dt.datetime.combine(BURST_DAY, dt.time(8), dt.UTC)
                for k in range(24):
                    yield node, metric, eight + dt.timedelta(minutes=5 * k)
            for h in range(30 * 24):
                t = START + dt.timedelta(hours=h, minutes=15)
                if node == "s301-a002" and t.date() == GAP_DAY:
                    continue
                if node == "s301-a001" and metric == "ROP" and t.date() == SHORT_DAY and t.hour < 6:
                    continue
                if burst and t.date() == BURST_DAY:
                    continue
                yield node, metric, t
                if metric == "WOB" and t.day % 2:
                    yield node, metric, t + dt.timedelta(minutes=30)


def _ns(t: dt.datetime) -> TimestampNanos:
    return TimestampNanos(int(t.timestamp()) * 1_000_000_000)


def _write(questdb: QuestDB, tables: TableSet) -> int:
    received = TimestampMicros(int(time.time() * 1_000_000))
    n = 0
    with Sender.from_conf(questdb.ilp_conf) as sender:
        for node, metric, t in samples():
            sender.row(
                tables.raw.name,
                symbols={"site": "s301", "node": node, "device": "daq", "metric": metric},
                columns={
                    "value": value(node, metric, t),
                    "hot": True,
                    "historical": False,
                    "received": received,
                },
                at=_ns(t),
            )
            n += 1
        for node, metric, unit, hot in CATALOGUE:
            sender.row(
                tables.catalogue.name,
                symbols={
                    "site": node.split("-")[0],
                    "node": node,
                    "device": "daq",
                    "metric": metric,
                    "datatype": "Double",
                    "unit": unit,
                },
                columns={"hot": hot},
                at=_ns(dt.datetime(2026, 10, 15, tzinfo=dt.UTC)),
            )
        sender.flush()
    return n


class Day(NamedTuple):
    """What the report must show for one series on one day."""

    count: int
    avg: float | None
    min: float | None
    max: float | None
    hours_with_data: int


def expected_days() -> dict[tuple[str, str, str], list[Day]]:
    """Per series (appliance, device, metric), its 30 days of November: computed from
    :func:`samples` and :func:`value` alone. The values are multiples of 0.25, so every sum
    is exact and ``sum / count`` is the one correctly rounded double a rollup can give."""
    values: dict[tuple[str, str, str, dt.date], list[float]] = defaultdict(list)
    hours: dict[tuple[str, str, str, dt.date], set[int]] = defaultdict(set)
    for node, metric, t in samples():
        if START <= t < END:
            values[(node, "daq", metric, t.date())].append(value(node, metric, t))
            hours[(node, "daq", metric, t.date())].add(t.hour)
    out = {}
    for series in SERIES:
        days = []
        for day in DAYS:
            v = values[(*series, day)]
            days.append(
                Day(
                    len(v),
                    sum(v) / len(v) if v else None,
                    min(v, default=None),
                    max(v, default=None),
                    len(hours[(*series, day)]),
                )
            )
        out[series] = days
    return out


_RULE = (
    "INSERT INTO alert_rules (tenant_id, site_id, metric, name, severity, condition, created_by)"
    " VALUES (%s, %s, 'ROP', %s, 'warning', '{}'::jsonb, 'test') RETURNING id"
)
_ALERT = (
    "INSERT INTO alerts (rule_id, tenant_id, site_id, appliance_id, metric, scope_key, "
    "severity, state, reason, value, sample_ts, opened_at, acknowledged_at, acknowledged_by, "
    "acknowledge_note, resolved_at, resolved_by, resolve_note) VALUES (%s, %s, %s, %s, 'ROP', "
    "%s, %s, %s, %s, 42.5, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _alerts(conn: psycopg.Connection) -> None:
    rule = conn.execute(_RULE, ("cust", "s301", "ROP high")).fetchone()
    other = conn.execute(_RULE, ("other", "s302", "other ROP")).fetchone()
    assert rule and other
    none = (None, None, None)
    for scope, sev, state, reason, opened, ack, res, site_rule in (
        (
            "a",
            "warning",
            "resolved",
            "ROP above 40 (in month)",
            "2026-11-05T10:00:00",
            (_t("2026-11-05T10:30:00"), "ann@cust", "checked"),
            (_t("2026-11-05T12:00:00"), "ann@cust", "sensor recalibrated"),
            ("s301", rule[0]),
        ),
        (
            "b",
            "critical",
            "open",
            "ROP stale since October",
            "2026-10-30T08:00:00",
            none,
            none,
            ("s301", rule[0]),
        ),
        (
            "c",
            "info",
            "acknowledged",
            "ROP late in month",
            "2026-11-28T09:00:00",
            (_t("2026-12-02T09:00:00"), "bob@cust", "after the month"),
            none,
            ("s301", rule[0]),
        ),
        (
            "d",
            "warning",
            "resolved",
            "closed in October",
            "2026-10-01T00:00:00",
            none,
            (_t("2026-10-02T00:00:00"), "ann@cust", "done"),
            ("s301", rule[0]),
        ),
        (
            "e",
            "warning",
            "open",
            "opened in December",
            "2026-12-03T00:00:00",
            none,
            none,
            ("s301", rule[0]),
        ),
        (
            "f",
            "warning",
            "open",
            "other tenant's alert",
            "2026-11-06T00:00:00",
            none,
            none,
            ("s302", other[0]),
        ),
    ):
        site, rule_id = site_rule
        tenant = "cust" if site == "s301" else "other"
        node = f"{site}-a001"
        conn.execute(
            _ALERT,
            (
                rule_id,
                tenant,
                site,
                node,
                scope,
                sev,
                state,
                reason,
                _t(opened),
                _t(opened),
                *ack,
                *res,
            ),
        )


@pytest.fixture(scope="module")
def report_world(_postgres_server: Postgres, _questdb_server: QuestDB) -> Iterator[w.World]:
    name = f"reg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_postgres_server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _postgres_server.dsn_for(name)
    migrate.apply(dsn)
    tables = TableSet(f"r{uuid.uuid4().hex[:8]}_")
    for statement in tables.create_statements():
        _questdb_server.exec_sql(statement)
    w.wait_for_daily(_questdb_server, tables, _write(_questdb_server, tables), site="s301")
    world = w.World(dsn, tables, dt.datetime(2026, 12, 15, 12, tzinfo=dt.UTC))
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.create_tenant(conn, "cust", "Customer One")
        registry.create_tenant(conn, "other", "Other Customer")
        registry.create_tenant(conn, "vend", "A Vendor", "vendor")
        registry.create_tenant(conn, "derrick", "Derrick Ops", "operator")
        registry.create_site(conn, "s301", "cust", "West pad", "America/Chicago")
        registry.create_site(conn, "s302", "other", "East pad", "UTC")
        registry.share_site(conn, "s301", "vend")
        with psycopg.connect(_questdb_server.pg_dsn, autocommit=True) as q:
            registry.sync_catalogue(conn, q, tables)
        _alerts(conn)
        for key_name, tenant, role in (
            ("cust", "cust", keys.Role.CUSTOMER_VIEWER),
            ("cust_admin", "cust", keys.Role.CUSTOMER_ADMIN),
            ("other", "other", keys.Role.CUSTOMER_VIEWER),
            ("vendor", "vend", keys.Role.VENDOR),
            ("ops", "derrick", keys.Role.OPS),
        ):
            uid = registry.create_user(conn, tenant, f"{key_name}@{tenant}.example", role)
            # rate limits out of the way: a report counts as 20 requests
            issued = registry.issue_api_key(conn, uid, key_name, rate_per_s=1000.0, burst=1000)
            world.keys[key_name] = issued.plaintext
    yield world
    with psycopg.connect(_postgres_server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def client(
    report_world: w.World, questdb: QuestDB
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(w.make_app(report_world, questdb)) as c:
        yield c


def auth(world: w.World, who: str = "cust") -> dict[str, str]:
    return {"Authorization": f"Bearer {world.keys[who]}"}


def rows_of(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def _num(text: str) -> float | None:
    return None if text == "" else float(text)


@pytest.mark.asyncio
async def test_csv_numbers_equal_the_samples_written_and_renders_are_byte_identical(
    client: AsyncTestClient[Litestar], report_world: w.World
) -> None:
    h = auth(report_world)
    first = await client.get(REPORT, params={"format": "csv"}, headers=h)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("text/csv")
    second = await client.get(REPORT, params={"format": "csv", "table": "daily"}, headers=h)
    assert second.content == first.content
    rows = rows_of(first.content)
    assert list(rows[0]) == ["day", "appliance", "device", "metric", "unit", "count", "avg", "min",
                             "max", "hours_with_data", "hours_in_day", "coverage_pct"]  # fmt: skip

    # every series, every day, in order; numbers as exact doubles (the CSV writes the
    # shortest text that reads back as the same double), coverage with one decimal
    want = [
        (str(day), *series, UNITS[series[2]], d.count, d.avg, d.min, d.max, d.hours_with_data,
         "24", f"{100 * d.hours_with_data / 24:.1f}")
        for series, days in expected_days().items()
        for day, d in zip(DAYS, days, strict=True)
    ]  # fmt: skip
    got = [
        (r["day"], r["appliance"], r["device"], r["metric"], r["unit"], int(r["count"]),
         _num(r["avg"]), _num(r["min"]), _num(r["max"]), int(r["hours_with_data"]),
         r["hours_in_day"], r["coverage_pct"])
        for r in rows
    ]  # fmt: skip
    assert len(got) == len(want) == 5 * 30
    for g, e in zip(got, want, strict=True):
        assert g == e, g[:4]
    # every sample of the month, none of the two just outside it
    in_month = sum(1 for _, _, t in samples() if START <= t < END)
    assert sum(int(r["count"]) for r in rows) == in_month
    # the cases the data was built for, spelled out
    by_key = {(r["day"], r["appliance"], r["metric"]): r for r in rows}
    gap = by_key[(str(GAP_DAY), "s301-a002", "ROP")]
    assert (gap["count"], gap["avg"], gap["hours_with_data"], gap["coverage_pct"]) == (
        "0",
        "",
        "0",
        "0.0",
    )
    short = by_key[(str(SHORT_DAY), "s301-a001", "ROP")]
    assert (short["count"], short["hours_with_data"], short["coverage_pct"]) == ("18", "18", "75.0")
    burst = by_key[(str(BURST_DAY), "s301-a002", "ROP")]
    assert (burst["count"], burst["hours_with_data"], burst["coverage_pct"]) == ("24", "2", "8.3")
    odd = by_key[("2026-11-03", "s301-a001", "WOB")]
    assert (odd["count"], odd["hours_with_data"], odd["unit"]) == ("48", "24", "klbf")
    assert all(r["count"] == "0" for r in rows if r["appliance"] == "s301-a003")

    alerts = await client.get(REPORT, params={"format": "csv", "table": "alerts"}, headers=h)
    again = await client.get(REPORT, params={"format": "csv", "table": "alerts"}, headers=h)
    assert alerts.content == again.content
    a = rows_of(alerts.content)
    assert [r["reason"] for r in a] == [
        "ROP stale since October",
        "ROP above 40 (in month)",
        "ROP late in month",
    ]
    assert [r["state_at_month_end"] for r in a] == ["open", "resolved", "open"]
    assert a[1]["acknowledged_by"] == "ann@cust" and a[1]["resolve_note"] == "sensor recalibrated"
    assert a[1]["resolved_at"] == "2026-11-05T12:00:00.000000Z" and a[1]["value"] == "42.5"
    assert a[2]["acknowledged_at"] == a[2]["acknowledged_by"] == ""  # acknowledged in December


_RENDERED: dict[str, bytes] = {}  # the PDF the API rendered, reused by the CLI test

# the chart's colours (api/report_pdf.py): the min-max band (#9ecae1 at alpha 0.6 on white)
# and the daily average's line (#08519c)
BAND, LINE = (196, 223, 237), (8, 81, 156)
RENDER_SCALE = 2  # pixels per PDF point


def _non_white_share(page: pdfium.PdfPage) -> float:
    image = page.render(scale=1).to_pil().convert("L")
    histogram = image.histogram()
    return 1 - sum(histogram[245:]) / (image.width * image.height)


def _share_near(image: Image.Image, colour: tuple[int, int, int], tolerance: int) -> float:
    """The share of ``image``'s pixels within ``tolerance`` of ``colour`` in every channel."""
    diff = ImageChops.difference(image, Image.new("RGB", image.size, colour))
    r, g, b = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(r, g), b)
    return sum(worst.histogram()[: tolerance + 1]) / (image.width * image.height)


def _images(page: pdfium.PdfPage) -> list[tuple[tuple[int, int], Image.Image]]:
    """Every image object the page draws: its size in PDF points (width, height) and the
    rendered page cropped to it (what a reader sees there)."""
    _, height = page.get_size()
    rendered = page.render(scale=RENDER_SCALE).to_pil().convert("RGB")
    found = []
    for image in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,)):
        left, bottom, right, top = image.get_bounds()
        box = (left, height - top, right, height - bottom)
        area = rendered.crop(tuple(round(v * RENDER_SCALE) for v in box))
        found.append(((round(right - left), round(top - bottom)), area))
    return found


def _pdf_line(day: dt.date, d: Day) -> str:
    """A day of a series' table as the PDF's text has it: numbers with three decimals."""
    if d.count == 0:  # empty aggregate cells
        return f"{day} 0 {d.hours_with_data}/24"
    return f"{day} {d.count} {d.avg:.3f} {d.min:.3f} {d.max:.3f} {d.hours_with_data}/24"


@pytest.mark.asyncio
async def test_pdf_shows_the_numbers_and_charts_and_is_reproducible(
    client: AsyncTestClient[Litestar], report_world: w.World
) -> None:
    h = auth(report_world, "cust_admin")
    r = await client.get(REPORT, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert 's301-2026-11.pdf"' in r.headers["content-disposition"]
    again = await client.get(REPORT, params={"format": "pdf"}, headers=h)
    assert again.content == r.content, "two renders of the same report differ"
    _RENDERED["pdf"] = r.content
    expected = expected_days()

    pdf = pdfium.PdfDocument(r.content)
    try:
        pages = [pdf[i] for i in range(len(pdf))]
        texts = [p.get_textpage().get_text_range().replace("\r\n", "\n") for p in pages]
        shares = [_non_white_share(p) for p in pages]
        assert min(shares) > 0.01, shares
        images = [_images(p) for p in pages]
        assert pdf.get_metadata_dict()["CreationDate"].startswith("D:20261101")
    finally:
        pdf.close()

    # one page per series, in order, each with its chart and its 30 days
    headings = [
        next((line for line in t.split("\n") if line.startswith("Daily aggregates: ")), None)
        for t in texts
    ]
    series_pages = [i for i, heading in enumerate(headings) if heading is not None]
    assert [headings[i] for i in series_pages] == [
        f"Daily aggregates: {a} / {dev} / {m} [{UNITS[m]}]" for a, dev, m in SERIES
    ]
    for i, (series, days) in zip(series_pages, expected.items(), strict=True):
        table = [line for line in texts[i].split("\n") if line[:4] == "2026"]
        assert table == [_pdf_line(day, d) for day, d in zip(DAYS, days, strict=True)], series
    assert [i for i, found in enumerate(images) if found] == series_pages  # charts only there

    # the charts: one image per series page, at least 150 x 40 mm (425 x 113 pt), which draws
    # the data: a series with samples fills its plot with the min-max band and the average's
    # line, the silent series' chart holds only the legend's swatches of those colours
    silent = SERIES.index(("s301-a003", "daq", "WOB"))
    for k, i in enumerate(series_pages):
        ((size, area),) = images[i]
        assert size[0] >= 425 and size[1] >= 113, (SERIES[k], size)
        band, line = _share_near(area, BAND, 24), _share_near(area, LINE, 40)
        if k == silent:
            assert band < 0.02 and line < 0.002, (SERIES[k], band, line)
        else:
            assert band > 0.15 and line > 0.004, (SERIES[k], band, line)

    flat = " ".join(" ".join(texts).split())
    assert "Monthly compliance report" in flat and "West pad" in flat
    total = sum(d.count for days in expected.values() for d in days)
    hours = sum(d.hours_with_data for days in expected.values() for d in days)
    possible = len(SERIES) * 30 * 24
    for line in (
        "Month: 2026-11; days covered: 30 (2026-11-01 to 2026-11-30)",
        f"Hot series: {len(SERIES)}; samples received: {total}",
        f"Data completeness: {hours} of {possible} series-hours with data "
        f"({100 * hours / possible:.1f} %)",
        "Alerts open during the month: 3 (critical 1, warning 1, info 1)",
    ):
        assert line in flat, line
    for (appliance, device, metric), days in expected.items():  # the completeness table
        h_ = sum(d.hours_with_data for d in days)
        line = (
            f"{appliance} {device} {metric} {sum(d.count for d in days)} "
            f"{sum(d.count > 0 for d in days)}/30 {h_}/720 {100 * h_ / 720:.1f}"
        )
        assert line in flat, line
    for reason in ("ROP stale since October", "ROP above 40 (in month)", "ROP late in month"):
        assert reason in flat
    assert "opened in December" not in flat and "other tenant" not in flat


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        ("vendor", REPORT, 403),  # the site is shared with the vendor: still no report
        ("ops", REPORT, 403),
        ("other", REPORT, 404),
        ("cust", "/v1/sites/s302/reports/2026-11", 404),
        ("cust", "/v1/sites/s999/reports/2026-11", 404),
        ("cust", "/v1/sites/s301/reports/2026-13", 400),
        ("cust", "/v1/sites/s301/reports/2027-01", 400),  # not started (clock: 2026-12-15)
        ("cust", f"{REPORT}?format=docx", 400),
        ("cust", f"{REPORT}?format=csv&table=secrets", 400),
    ],
)
async def test_access_and_parameters(
    client: AsyncTestClient[Litestar], report_world: w.World, who: str, path: str, status: int
) -> None:
    r = await client.get(path, headers=auth(report_world, who))
    assert r.status_code == status, r.text
    if status == 404:
        missing = await client.get(
            "/v1/sites/s999/reports/2026-11", headers=auth(report_world, who)
        )
        assert r.json() == missing.json()


def test_systemd_units_run_the_documented_cli() -> None:
    units = ROOT / "api" / "systemd"
    timer = configparser.ConfigParser(interpolation=None)
    timer.read(units / "derrick-report@.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    service = configparser.ConfigParser(interpolation=None)
    service.read(units / "derrick-report@.service")
    argv = shlex.split(service["Service"]["ExecStart"].replace("%i", "s001"))
    assert argv[1:3] == ["-m", "api"]
    args = cli._parser().parse_args(argv[3:])
    assert (args.command, args.site, args.month) == ("report", "s001", None)
    assert cli.previous_month(dt.datetime(2027, 1, 1, 6, tzinfo=dt.UTC)) == "2026-12"


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


@pytest.mark.asyncio
async def test_cli_writes_the_same_files_as_the_api(
    client: AsyncTestClient[Litestar], report_world: w.World, questdb: QuestDB, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DERRICK_PG_DSN": report_world.registry_dsn,
        "DERRICK_QUESTDB_PG": questdb.pg_dsn,
    }
    argv = [
        sys.executable,
        "-m",
        "api",
        "report",
        "--site",
        "s301",
        "--month",
        MONTH,
        "--out",
        str(tmp_path / "out"),
        "--table-prefix",
        report_world.tables.prefix,
    ]
    done = await asyncio.to_thread(_run, argv, env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "s301-2026-11-alerts.csv",
        "s301-2026-11-daily.csv",
        "s301-2026-11.pdf",
    ]
    h = auth(report_world)
    for name, params in (
        ("s301-2026-11.pdf", {}),
        ("s301-2026-11-daily.csv", {"format": "csv"}),
        ("s301-2026-11-alerts.csv", {"format": "csv", "table": "alerts"}),
    ):
        if name.endswith(".pdf") and "pdf" in _RENDERED:  # rendered by the PDF test already
            want = _RENDERED["pdf"]
        else:
            want = (await client.get(REPORT, params=params, headers=h)).content
        assert (out / name).read_bytes() == want, name


def test_cli_all_sites_renders_every_site_of_the_registry(
    report_world: w.World, questdb: QuestDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--all-sites`` (the cloud role's timer): one directory per site of the registry, each
    with the files ``--site`` writes, byte for byte."""
    monkeypatch.setenv("DERRICK_PG_DSN", report_world.registry_dsn)
    monkeypatch.setenv("DERRICK_QUESTDB_PG", questdb.pg_dsn)
    common = ["--month", MONTH, "--table-prefix", report_world.tables.prefix]
    every, one = tmp_path / "every", tmp_path / "one"
    assert cli.main(["report", "--all-sites", "--out", str(every), *common]) == 0
    assert cli.main(["report", "--site", "s301", "--out", str(one), *common]) == 0
    assert sorted(p.name for p in every.iterdir()) == ["s301", "s302"]
    for site in ("s301", "s302"):
        assert sorted(p.name for p in (every / site).iterdir()) == [
            f"{site}-{MONTH}-alerts.csv",
            f"{site}-{MONTH}-daily.csv",
            f"{site}-{MONTH}.pdf",
        ]
    for path in one.iterdir():
        assert (every / "s301" / path.name).read_bytes() == path.read_bytes(), path.name
    # s302 (another tenant) gets its own appliances' rows, none of s301's
    rows = rows_of((every / "s302" / f"s302-{MONTH}-daily.csv").read_bytes())
    assert rows and {r["appliance"] for r in rows} == {"s302-a001"}
    with pytest.raises(SystemExit):  # one of the two is required, not both
        cli._parser().parse_args(["report", "--site", "s301", "--all-sites", "--out", "x"])


def test_cli_names_a_missing_site(
    report_world: w.World,
    questdb: QuestDB,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DERRICK_PG_DSN", report_world.registry_dsn)
    monkeypatch.setenv("DERRICK_QUESTDB_PG", questdb.pg_dsn)
    argv = ["report", "--site", "s999", "--month", MONTH, "--out", str(tmp_path)]
    assert cli.main(argv) == 1
    assert "no site 's999'" in capsys.readouterr().err
    assert cli.main(["report", "--site", "s301", "--month", "2031-01", "--out", str(tmp_path)]) == 1
    assert "has not started" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
