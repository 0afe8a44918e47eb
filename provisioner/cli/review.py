"""`provisioner review`: the service review over a period, and `provisioner review weekly`: the
production meeting's summary; as tables, JSON or Markdown, to the terminal or a file."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from provisioner.cli.output import STATE, call, client, console
from provisioner.core import review_markdown
from provisioner.core.review_markdown import pct

review_app = typer.Typer(help="The service review (SLOs, fleet, integrity, toil, capacity, ratings, maturity, "
                              "data catalogue) and the weekly production-meeting summary.")

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhw]?)\s*$")
_UNIT_DAYS = {"": 1.0, "d": 1.0, "h": 1 / 24, "w": 7.0}


def span_days(text: str) -> float:
    """'28d', '12h', '2w' or a bare number of days, in days."""
    m = _SPAN.match(text)
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: give a period like 28d, 7d, 12h or 2w", param_hint="--since")
    return float(m.group(1)) * _UNIT_DAYS[m.group(2)]


Since = Annotated[str, typer.Option(help="the period ending at --end: 28d, 7d, 12h, 2w")]
End = Annotated[datetime | None, typer.Option(help="end of the period, UTC, e.g. 2026-12-01T00:00:00 (default now)")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="table, json or markdown (default: table, or "
                                                                   "json with the global --output json)")]
Output = Annotated[Path | None, typer.Option("--output", help="write to this file instead of the terminal")]


def _fetch(path: str, since: str, end: datetime | None) -> dict[str, Any]:
    params: dict[str, Any] = {"period_days": span_days(since)}
    if end is not None:
        params["end"] = end.isoformat()
    doc: dict[str, Any] = call(client().get, path, **params)
    return doc


def _emit(doc: dict[str, Any], fmt: str | None, output: Path | None, markdown: Any, table: Any) -> None:
    fmt = fmt or ("json" if STATE["output"] == "json" else "table")
    if fmt not in ("table", "json", "markdown"):
        raise typer.BadParameter("--format must be table, json or markdown", param_hint="--format")
    if fmt == "table":
        if output is not None:
            raise typer.BadParameter("a table is for the terminal: write json or markdown to a file",
                                     param_hint="--output")
        table(doc)
        return
    text = json.dumps(doc, indent=2) if fmt == "json" else markdown(doc)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n")
        console.print(f"wrote {output}")


def _slo_table(slos: list[dict[str, Any]], title: str) -> None:
    t = Table("SLO", "objective", "events", "bad", "attained", "budget left", title=title)
    for s in slos:
        left = s["budget_remaining"]
        t.add_row(s["name"], pct(s["objective"], 1), str(s["events"]), str(s["bad"]), pct(s["attainment"]),
                  f"[{'green' if left > 0 else 'red'}]{pct(left, 1)}[/]")
    console.print(t)


def _review_tables(doc: dict[str, Any]) -> None:
    p = doc["period"]
    _slo_table(doc["slo"]["slos"], f"Service review {p['label']}: {p['start']} to {p['end']}")
    fleet = Table("pool", "hosts", "capacity", "in use", "utilisation", "trend/day", "runs out on", title="Fleet")
    plans = {c["pool"]: c for c in doc["capacity"] or []}
    for q in doc["fleet"]["by_pool"]:
        c = plans.get(q["pool"], {})
        fleet.add_row(q["pool"], str(q["hosts"]), str(q["capacity"]), str(q["in_use"]), pct(q["utilisation"], 1),
                      str(c.get("rate_per_day", "-")), str(c.get("runs_out_on") or "-"))
    console.print(fleet)
    r = doc["integrity"]["restore_tests"]
    t = doc["toil"]
    console.print(f"restore tests: {r['run']} run, {r['passed']} passed, {r['failed']} failed; "
                  f"hosts never restored: {doc['integrity']['hosts_never_restored']}")
    console.print(f"toil: {t['total']} (period before {t['previous_period_total']}): {t['failed_jobs']} failed jobs, "
                  f"{t['retried_jobs']} retried, {t['manual_host_moves']} manual host moves, "
                  f"{t['waivers_granted']} waivers granted, {t['escalations_opened']} escalations")
    rt = doc["ratings"]
    console.print(f"ratings: {rt['count']}, mean {rt['mean'] if rt['mean'] is not None else '-'}; "
                  f"open escalations: {rt['open_escalations']}")
    m = Table("area", "level", "evidence", title="Maturity")
    for row in doc["maturity"]:
        m.add_row(row["area"], f"{row['level']} {row['label']}", row["evidence"])
    console.print(m)


def _weekly_tables(doc: dict[str, Any]) -> None:
    p = doc["period"]
    _slo_table(doc["slo"], f"Production meeting {p['label']}: {p['start']} to {p['end']}")
    ch = Table("when", "change", "by", title="What changed")
    for c in doc["changes"]["images"]:
        ch.add_row(c["at"], f"image {c['image'] or c['image_id']}: {c['from']} → {c['to']}", c["by"])
    for c in doc["changes"]["policy"]:
        ch.add_row(c["at"], f"policy version {c['version']}", c["by"])
    console.print(ch)
    f = Table("kind", "reason", "jobs", title="Top failure reasons")
    for row in doc["top_failures"]:
        f.add_row(row["kind"], row["reason"], str(row["count"]))
    console.print(f)
    console.print(f"open escalations: {len(doc['open_escalations'])}")


@review_app.callback(invoke_without_command=True)
def review(ctx: typer.Context, since: Since = "28d", end: End = None, fmt: Format = None,
           output: Output = None) -> None:
    """The service review over --since (28 days by default)."""
    if ctx.invoked_subcommand is not None:
        return
    _emit(_fetch("/v1/review", since, end), fmt, output, review_markdown.review, _review_tables)


@review_app.command("weekly")
def weekly(since: Since = "7d", end: End = None, fmt: Format = None, output: Output = None) -> None:
    """The weekly production-meeting summary: what changed, SLOs, top failure reasons, open escalations."""
    _emit(_fetch("/v1/review/weekly", since, end), fmt, output, review_markdown.weekly, _weekly_tables)
