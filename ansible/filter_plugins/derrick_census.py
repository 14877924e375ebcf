"""Filters of ``fleet-census.yml``: what runs on each appliance, per site counts, and the
report's Markdown and CSV renderings. Pure functions of what the play observed.

``derrick_census_report(observed)``: ``observed`` maps each host to the raw observations of the
play (or None for a host the play lost), each::

    {"site": "s017", "unreachable": false, "probe_msg": "",
     "probe_output": "release=releases/0.1.0\npython=yes\nhealth_rc=0\nhealth=healthy: ...",
     "probed": true, "legacy": {...derrick_legacy fact...} | None, "detect_error": ""}

and gives ``{"hosts": [entry, ...], "sites": {site: counts}}``. An entry's ``running`` is one
of ``legacy``, ``derrick`` (the agent committed), ``switching`` (staged or on trial),
``unreachable``, ``not-probed`` (no Python 3.11 to run the detection with, and no version
marker) or ``probe-failed``. Without the detection, a legacy version comes from the version
markers the probe printed (``detected_by: markers``; anomalies unknown then).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import posixpath
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

CSV_COLUMNS = (
    "host", "site", "running", "legacy_version", "inferred", "release", "agent_state", "health",
    "anomalies", "unsent", "detected_by", "detail",
)  # fmt: skip
NO_DETECTION = "no Python 3.11 on the appliance to run the detection with (derrick_census_python)"


@functools.cache
def _legacy() -> ModuleType:
    """``module_utils/derrick_legacy.py`` (pure Python): the markers' meaning, in one place."""
    path = Path(__file__).resolve().parent.parent / "module_utils" / "derrick_legacy.py"
    spec = importlib.util.spec_from_file_location("derrick_legacy_for_census", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_probe(output: str) -> dict[str, Any]:
    """The raw probe's ``key=value`` lines: release, health verdict and text, markers."""
    found: dict[str, Any] = {"release": None, "health": None, "health_text": "", "markers": []}
    health: list[str] = []
    for line in output.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "release":
            found["release"] = posixpath.basename(value.strip().rstrip("/")) or None
        elif key == "health_rc":
            found["health"] = "healthy" if value.strip() == "0" else "unhealthy"
        elif key == "health":
            health.append(value.strip())
        elif key == "marker":
            where, _, text = value.partition("=")
            found["markers"].append((where, text))
    found["health_text"] = " ".join(health)
    return found


def version_from_markers(markers: list[tuple[str, str]]) -> tuple[str | None, list[str], str]:
    """(version, anomaly codes, detail) from the markers alone (no layout, no configuration)."""
    legacy = _legacy()
    releases = {r for w, t in markers if (r := legacy.marker_release(w, t)) is not None}
    if not releases:
        return None, [], f"no version marker; {NO_DETECTION}"
    if len(releases) > 1:
        return None, ["conflicting-markers"], f"markers say {sorted(releases)}; {NO_DETECTION}"
    release = releases.pop()
    if release not in legacy.RELEASES:
        return None, ["unknown-release"], f"marker says {release!r}; {NO_DETECTION}"
    return legacy.RELEASES[release], [], f"version from its marker only; {NO_DETECTION}"


def census_entry(host: str, obs: dict[str, Any] | None) -> dict[str, Any]:
    """What runs on one appliance, from the play's observations."""
    site = (obs or {}).get("site") or host.split("-", 1)[0]
    entry: dict[str, Any] = {
        "host": host, "site": site, "running": "probe-failed", "legacy_version": None,
        "inferred": False, "release": None, "agent_state": None, "health": None,
        "anomalies": [], "unsent": None, "detected_by": None, "detail": "",
    }  # fmt: skip
    if obs is None:
        entry["detail"] = "the play lost this host before it was recorded"
        return entry
    if obs.get("unreachable"):
        entry["running"] = "unreachable"
        entry["detail"] = str(obs.get("probe_msg") or "")[:300]
        return entry
    probe = parse_probe(str(obs.get("probe_output") or ""))
    entry["release"], entry["health"], health_text = (
        probe["release"], probe["health"], probe["health_text"]
    )  # fmt: skip
    legacy = obs.get("legacy")
    if not obs.get("probed"):
        version, codes, detail = version_from_markers(probe["markers"])
        entry["running"] = "legacy" if version or codes else "not-probed"
        entry["legacy_version"], entry["anomalies"], entry["detail"] = version, codes, detail
        entry["detected_by"] = "markers" if version or codes else None
        return entry
    if not isinstance(legacy, dict):
        entry["detail"] = str(obs.get("detect_error") or "detection returned nothing")[:300]
        return entry
    entry["detected_by"] = "module"
    entry["legacy_version"] = legacy.get("version")
    entry["inferred"] = bool(legacy.get("inferred"))
    entry["agent_state"] = legacy.get("agent_state")
    anomalies = legacy.get("anomalies") or []
    entry["anomalies"] = [a.get("code") for a in anomalies]
    if legacy.get("converged"):
        entry["running"] = "derrick"
        entry["detail"] = health_text
    elif entry["agent_state"] in ("staged", "trial"):
        entry["running"] = "switching"
        entry["detail"] = health_text
    else:
        entry["running"] = "legacy"
        entry["unsent"] = legacy.get("unsent")  # after the switch they are the agent's
        entry["detail"] = "; ".join(f"{a.get('code')}: {a.get('detail')}" for a in anomalies)
    return entry


def label(entry: dict[str, Any]) -> str:
    """The per-site count key: ``legacy v2.3``, ``derrick 0.1.0``, ``unreachable`` ..."""
    running = entry["running"]
    if running == "legacy":
        return f"legacy {entry['legacy_version'] or '(version unknown)'}"
    if running in ("derrick", "switching"):
        return f"{running} {entry['release'] or '(release unknown)'}"
    return str(running)


def census_report(observed: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Every host's entry and, per site, the counts by version/release, anomaly and health."""
    hosts = [census_entry(h, observed[h]) for h in sorted(observed)]
    sites: dict[str, dict[str, Any]] = {}
    for entry in hosts:
        site = sites.setdefault(
            entry["site"], {"appliances": 0, "running": Counter(), "anomalies": Counter(),
                            "unhealthy": 0}
        )  # fmt: skip
        site["appliances"] += 1
        site["running"][label(entry)] += 1
        site["anomalies"].update(entry["anomalies"])
        site["unhealthy"] += entry["health"] == "unhealthy"
    for site in sites.values():
        site["running"] = dict(sorted(site["running"].items()))
        site["anomalies"] = dict(sorted(site["anomalies"].items()))
    return {"hosts": hosts, "sites": dict(sorted(sites.items()))}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def census_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: per site the counts, then one row per appliance."""
    lines = ["# Fleet census", ""]
    for site, counts in report["sites"].items():
        lines += [f"## {site}: {counts['appliances']} appliances", ""]
        lines += ["| runs | appliances |", "|---|---|"]
        lines += [f"| {_cell(k)} | {v} |" for k, v in counts["running"].items()]
        if counts["anomalies"]:
            lines += ["", "| anomaly | appliances |", "|---|---|"]
            lines += [f"| {_cell(k)} | {v} |" for k, v in counts["anomalies"].items()]
        if counts["unhealthy"]:
            lines += ["", f"Unhealthy agents: {counts['unhealthy']}"]
        lines += ["", "| appliance | runs | agent state | health | anomalies | unsent | detail |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for e in report["hosts"]:
            if e["site"] == site:
                cells = (e["host"], label(e), e["agent_state"], e["health"], e["anomalies"],
                         e["unsent"], e["detail"])  # fmt: skip
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def census_csv(report: dict[str, Any]) -> str:
    """One row per appliance (anomalies joined with ``;``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in report["hosts"]:
        writer.writerow(
            ";".join(e[c]) if c == "anomalies" else ("" if e[c] is None else e[c])
            for c in CSV_COLUMNS
        )
    return out.getvalue()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "derrick_census_report": census_report,
            "derrick_census_markdown": census_markdown,
            "derrick_census_csv": census_csv,
        }
