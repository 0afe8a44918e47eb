"""`provisioner jobs`: list, show, events, cancel and the live watch."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from provisioner.cli.output import STATE, call, client, console, show

jobs_app = typer.Typer(help="Jobs: list, show, events, watch, cancel.", no_args_is_help=True)


# --- jobs ---------------------------------------------------------------------------------------------

JOB_COLS = ["id", "kind", "host_id", "request_id", "status", "current_phase", "attempts", "queued_at", "error"]


@jobs_app.command("list")
def jobs_list(status: Annotated[str | None, typer.Option()] = None,
              kind: Annotated[str | None, typer.Option()] = None, host_id: Annotated[int | None, typer.Option()] = None,
              request_id: Annotated[int | None, typer.Option()] = None, limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/jobs", status=status, kind=kind, host_id=host_id, request_id=request_id,
              limit=limit, offset=offset), JOB_COLS)


@jobs_app.command("show")
def jobs_show(job_id: int) -> None:
    job = call(client().get, f"/v1/jobs/{job_id}")
    if STATE["output"] == "json":
        show(job)
        return
    console.print(_job_view(job, []))


@jobs_app.command("events")
def jobs_events(job_id: int, after_seq: int = 0, limit: int = 200) -> None:
    show(call(client().get, f"/v1/jobs/{job_id}/events", after_seq=after_seq, limit=limit),
         ["seq", "phase", "event", "task", "status", "duration_s"])


@jobs_app.command("cancel")
def jobs_cancel(job_id: int) -> None:
    show(call(client().post, f"/v1/jobs/{job_id}/cancel"), None)


@jobs_app.command("watch")
def jobs_watch(job_id: int) -> None:
    """Live progress of a job over Server-Sent Events: phases and tasks as they run, SLIs at the end."""
    watch_job(job_id)


def _job_view(job: dict[str, Any], tasks: list[dict[str, Any]]) -> Group:
    head = (f"job {job['id']} [bold]{job['kind']}[/bold] host {job['host_id']}: [bold]{job['status']}[/bold]"
            + (f" (phase {job['current_phase']})" if job.get("current_phase") else ""))
    phases = Table("phase", "status", "seconds", "attempts", title="phases")
    for p in job.get("phases") or []:
        phases.add_row(p["name"], p["status"], str(p.get("duration_s") or ""), str(p.get("attempts", "")))
    parts: list[Any] = [head, phases]
    if tasks:
        t = Table("seq", "phase", "task", "status", "s", title="latest tasks")
        for e in tasks[-8:]:
            t.add_row(str(e["seq"]), e["phase"], e.get("task") or "", e.get("status") or "",
                      str(e.get("duration_s") or ""))
        parts.append(t)
    sli = job.get("sli") or {}
    if sli:
        s = Table("SLI", "value", title="install-time SLIs")
        s.add_row("queue wait (s)", str(sli.get("queue_wait_s")))
        for name, v in (sli.get("phases_s") or {}).items():
            s.add_row(f"phase {name} (s)", str(v))
        s.add_row("run (s)", str(sli.get("run_s")))
        s.add_row("engine overhead (s)", str(sli.get("engine_overhead_s")))
        s.add_row("total from request accepted (s)", str(sli.get("total_s")))
        s.add_row("SLO target (s)", str(sli.get("slo_target_s")))
        s.add_row("SLO met", str(sli.get("slo_met")))
        parts.append(s)
    if job.get("error"):
        parts.append(f"[red]error:[/red] {job['error']}")
    return Group(*parts)


def watch_job(job_id: int, *, emit: bool = True, fail: bool = True) -> dict[str, Any]:
    """Follow the job's Server-Sent Events stream (resumed by the client if the connection drops)."""
    c = client()
    tasks: list[dict[str, Any]] = []
    json_out = STATE["output"] == "json"
    # Without a terminal (CI logs, pipes) a live view cannot redraw: print the final view once.
    live_view = not json_out and console.is_terminal
    job: dict[str, Any] = {}

    def follow(live: Any) -> None:
        nonlocal job
        for kind, data in c.stream_job(job_id):
            if kind == "event":
                if data.get("status"):
                    tasks.append(data)
            else:
                job = data
            if live_view and job:
                live.update(_job_view(job, tasks))

    with Live(console=console, refresh_per_second=4, transient=False) if live_view else _Null() as live:
        call(follow, live)
    if not json_out and not live_view:
        console.print(_job_view(job, tasks))
    if json_out and emit:
        print(json.dumps(job, indent=2))
    if fail and job.get("status") != "succeeded":
        raise typer.Exit(1)
    return job


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *a: object) -> None:
        return None

    def update(self, *_: object) -> None:
        return None
