"""The monthly compliance report as a PDF (fpdf2), with charts drawn by matplotlib (Agg).

The layout is this module's template: a cover page (site, month, summary), the data
completeness table, the alert history, then one section per hot series: a chart of the daily
average with its min–max band and the daily table. Every number comes from the
:class:`api.reports.MonthlyReport` and is formatted by :func:`api.reports.display`, so the
PDF shows the CSV's numbers. Rendering is deterministic: the creation date and the document
id derive from the report month, images carry no software/date metadata, and the font
(DejaVu Sans, shipped with matplotlib) is embedded the same way every time. The same report
gives the same bytes with the same library versions.

CPU-bound (about 0.6 s per series on a loaded 2-core machine): callers in the event loop run it
in a thread.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import matplotlib as mpl
from fpdf import FPDF
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from api.reports import HOURS_PER_DAY, AlertRow, DailyRow, MonthlyReport, display

_FONT = "DejaVu"
_FONT_DIR = Path(mpl.get_data_path()) / "fonts" / "ttf"
_TITLE = "Monthly compliance report"


def _chart(rows: list[DailyRow], title: str) -> bytes:
    """PNG of one series: daily average (line) inside its min–max band; days without data
    are gaps."""
    fig = Figure(figsize=(7.2, 2.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    days = [r.day.day for r in rows]
    nan = float("nan")
    avg = [r.avg if r.avg is not None else nan for r in rows]
    lo = [r.min if r.min is not None else nan for r in rows]
    hi = [r.max if r.max is not None else nan for r in rows]
    ax.fill_between(days, lo, hi, color="#9ecae1", alpha=0.6, label="min–max", linewidth=0)
    ax.plot(days, avg, color="#08519c", marker="o", markersize=3, linewidth=1.5, label="avg")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("day of month (UTC)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.17)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


class _Document(FPDF):
    def __init__(self, report: MonthlyReport) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.add_font(_FONT, "", str(_FONT_DIR / "DejaVuSans.ttf"))
        self.add_font(_FONT, "B", str(_FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(auto=True, margin=15)
        self.set_creation_date(report.start)
        self.set_title(f"{_TITLE} {report.site} {report.month}")
        self.set_author("Derrick")
        self.set_subject(f"site {report.site}, {report.month} (UTC)")
        self.set_creator("Derrick API")
        self.set_producer("Derrick API")

    def header(self) -> None:
        self.set_font(_FONT, "", 8)
        self.cell(0, 5, f"{_TITLE}: site {self.report.site}, {self.report.month} (UTC)")
        self.ln(7)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, "", 8)
        self.cell(0, 5, f"page {self.page_no()}/{{nb}}", align="C")

    def heading(self, text: str) -> None:
        self.set_font(_FONT, "B", 12)
        self.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        self.set_font(_FONT, "", 8)

    def grid(self, header: list[str], rows: list[list[str]], widths: tuple[int, ...]) -> None:
        """A table of short, single-line cells (fast); the header repeats on a new page."""
        height = 4.2

        def line(cells: list[str], style: str) -> None:
            self.set_font(_FONT, style, 7)
            for value, width in zip(cells, widths, strict=True):
                self.cell(width, height, value, border=1)
            self.ln(height)

        line(header, "B")
        for row in rows:
            if self.get_y() + height > self.page_break_trigger:
                self.add_page()
                line(header, "B")
            line(row, "")
        self.ln(3)

    def wrapped_table(
        self, header: list[str], rows: list[list[str]], widths: tuple[int, ...]
    ) -> None:
        """A table whose cells wrap (free text such as alert notes)."""
        self.set_font(_FONT, "", 7)
        with self.table(col_widths=widths, line_height=4, first_row_as_headings=True) as t:
            for row in [header, *rows]:
                cells = t.row()
                for value in row:
                    cells.cell(value)
        self.ln(3)


def _summary(doc: _Document, report: MonthlyReport) -> None:
    doc.set_font(_FONT, "B", 18)
    doc.cell(0, 12, _TITLE, new_x="LMARGIN", new_y="NEXT")
    doc.set_font(_FONT, "", 10)
    samples = sum(r.count for r in report.daily)
    hours = sum(r.hours_with_data for r in report.daily)
    possible = len(report.daily) * HOURS_PER_DAY
    by_severity = {s: sum(a.severity == s for a in report.alerts)
                   for s in ("critical", "warning", "info")}  # fmt: skip
    last = report.days[-1].isoformat() if report.days else "(no complete day yet)"
    lines = [
        f"Site: {report.site} {report.site_name}".rstrip(),
        f"Site time zone: {report.timezone} (the report's days are UTC days)",
        f"Month: {report.month}; days covered: {len(report.days)} "
        f"({report.start.date().isoformat()} to {last})",
        f"Hot series: {len(report.series())}; samples received: {samples}",
        f"Data completeness: {hours} of {possible} series-hours with data "
        f"({display(100.0 * hours / possible if possible else None, 1) or '-'} %)",
        f"Alerts open during the month: {len(report.alerts)} (critical {by_severity['critical']}, "
        f"warning {by_severity['warning']}, info {by_severity['info']})",
        "Sources: QuestDB daily and hourly rollups of the hot metrics; PostgreSQL alert history.",
    ]
    for line in lines:
        doc.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    doc.ln(4)


def _completeness(doc: _Document, report: MonthlyReport) -> None:
    doc.heading("Data completeness")
    doc.multi_cell(
        0, 4,
        "Per series: samples received in the month, days with at least one sample, and the "
        "hours of the month with at least one sample (a live sensor reports at least once a "
        "minute, so an hour without a sample is a gap).",
        new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    doc.ln(2)
    rows = []
    for appliance, device, metric, _ in report.series():
        mine = [r for r in report.daily
                if (r.appliance, r.device, r.metric) == (appliance, device, metric)]  # fmt: skip
        hours = sum(r.hours_with_data for r in mine)
        rows.append([
            appliance, device, metric, str(sum(r.count for r in mine)),
            f"{sum(r.count > 0 for r in mine)}/{len(mine)}",
            f"{hours}/{len(mine) * HOURS_PER_DAY}",
            display(100.0 * hours / (len(mine) * HOURS_PER_DAY) if mine else None, 1),
        ])  # fmt: skip
    header = ["appliance", "device", "metric", "samples", "days with data", "hours with data", "%"]
    doc.grid(header, rows, (30, 22, 30, 22, 22, 24, 14))


def _alerts(doc: _Document, alerts: tuple[AlertRow, ...]) -> None:
    doc.heading("Alert history")
    if not alerts:
        doc.cell(0, 6, "No alert was open during the month.", new_x="LMARGIN", new_y="NEXT")
        doc.ln(3)
        return

    def when(value: dt.datetime | None) -> str:
        return "" if value is None else value.strftime("%Y-%m-%d %H:%M")

    rows = [
        [
            str(a.id),
            a.severity,
            a.rule,
            f"{a.appliance} {a.metric}".strip(),
            a.reason,
            when(a.opened_at),
            f"{when(a.acknowledged_at)} {a.acknowledged_by} {a.acknowledge_note}".strip(),
            f"{when(a.resolved_at)} {a.resolved_by} {a.resolve_note}".strip(),
            a.state_at_month_end,
        ]
        for a in alerts
    ]
    header = ["id", "severity", "rule", "scope", "reason", "opened (UTC)", "acknowledged",
              "resolved", "state at month end"]  # fmt: skip
    doc.wrapped_table(header, rows, (9, 15, 22, 24, 28, 20, 26, 26, 18))


def _series(doc: _Document, report: MonthlyReport) -> None:
    for appliance, device, metric, unit in report.series():
        rows = [r for r in report.daily
                if (r.appliance, r.device, r.metric) == (appliance, device, metric)]  # fmt: skip
        doc.add_page()
        title = f"{appliance} / {device} / {metric}" + (f" [{unit}]" if unit else "")
        doc.heading(f"Daily aggregates: {title}")
        if rows:
            doc.image(io.BytesIO(_chart(rows, title)), w=180)
            doc.ln(2)
        doc.grid(
            ["day (UTC)", "count", "avg", "min", "max", "hours with data"],
            [
                [
                    r.day.isoformat(),
                    str(r.count),
                    display(r.avg),
                    display(r.min),
                    display(r.max),
                    f"{r.hours_with_data}/{HOURS_PER_DAY}",
                ]
                for r in rows
            ],
            (30, 25, 30, 30, 30, 30),
        )


def render(report: MonthlyReport) -> bytes:
    """The report as PDF bytes."""
    doc = _Document(report)
    doc.add_page()
    _summary(doc, report)
    _completeness(doc, report)
    _alerts(doc, report.alerts)
    _series(doc, report)
    return bytes(doc.output())
