"""`provisioner slo`: each SLO's attainment, error budget left and burn rates (operators, auditors)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from provisioner.cli.output import STATE, call, client, console, show
from provisioner.core.review_markdown import pct


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def slo_status(
    period_days: Annotated[float | None, typer.Option(help="judge this many days (default: each SLO's own, 28)")]
    = None,
    end: Annotated[datetime | None,
                   typer.Option(help="end of the period, UTC, e.g. 2026-12-01T00:00:00 (default now)")] = None,
) -> None:
    """SLOs over job history: attainment, error budget left, burn rates and the burn alerts firing."""
    params: dict[str, Any] = {"period_days": period_days}
    if end is not None:
        params["end"] = end.isoformat()
    data = call(client().get, "/v1/slo", **params)
    if STATE["output"] == "json":
        show(data)
        return
    # The long window of each alert pair; the short ones are in --output json.
    windows = [a["long_window"] for a in data["alert_pairs"]]
    t = Table("SLO", "objective", "period", "events", "bad", "attained", "budget left",
              *[f"burn {w}" for w in windows], "firing", title=f"SLOs ending {data['end']}")
    for s in data["slos"]:
        firing = ", ".join(f"{a['name']} ({a['severity']})" for a in s["alerts"] if a["firing"])
        left = s["budget_remaining"]
        t.add_row(s["name"], pct(s["objective"], 1), s["period"], str(s["events"]), str(s["bad"]),
                  pct(s["attainment"]), f"[{'green' if left > 0 else 'red'}]{pct(left, 1)}[/]",
                  *[_rate(s["burn_rates"].get(w)) for w in windows], f"[red]{firing}[/red]" if firing else "")
    console.print(t)
    console.print("[dim]burn 1.00x spends the error budget in exactly the period; - means no finished job "
                  "in the window[/dim]")
