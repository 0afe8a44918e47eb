"""Output helpers shared by every command: the global options, the API client, tables or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from provisioner.client import ApiError, Client

# Without a terminal rich would wrap at 80 columns; logs and pipes get wide tables instead.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
STATE: dict[str, Any] = {"output": "table", "url": None, "token": None}


def client() -> Client:
    return Client(STATE["url"], STATE["token"])


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ApiError as exc:
        if STATE["output"] == "json":
            print(json.dumps(exc.problem), file=sys.stderr)
        else:
            err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None


def show(data: Any, columns: list[str] | None = None) -> None:
    if STATE["output"] == "json":
        print(json.dumps(data, indent=2))
        return
    rows = data["items"] if isinstance(data, dict) and "items" in data else data
    if isinstance(rows, dict):
        t = Table(show_header=False)
        for k, v in rows.items():
            t.add_row(k, v if isinstance(v, str) else json.dumps(v))
        console.print(t)
        return
    cols = columns or (list(rows[0].keys()) if rows else [])
    t = Table(*cols)
    for r in rows:
        t.add_row(*[str(r.get(c, "")) if not isinstance(r.get(c), (dict, list)) else json.dumps(r.get(c))
                    for c in cols])
    console.print(t)
    if isinstance(data, dict) and "total" in data:
        more = "" if data.get("total_exact", True) else "+"
        console.print(f"[dim]{len(rows)} of {data['total']}{more}[/dim]")
