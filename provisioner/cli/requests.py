"""`provisioner requests`: ask for hosts, watch, reimage, release, extend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from provisioner.cli.jobs import watch_job
from provisioner.cli.output import STATE, call, client, show

requests_app = typer.Typer(help="Host requests: ask for hosts, watch, reimage, release.", no_args_is_help=True)


# --- requests -----------------------------------------------------------------------------------------

@requests_app.command("create")
def requests_create(
    # IMAGE is the one positional argument; it follows the required --ssh-key only because Python
    # wants the parameters without a default first.
    ssh_key: Annotated[Path, typer.Option(help="public key file installed for the customer user")],
    image: Annotated[str | None, typer.Argument(
        help="a catalogue image you may request (`provisioner images list`), written on hosts enrolled by "
             "their BMC (a pool without any: 409 image.needs_bmc); leave it out to get hosts reached over SSH, "
             "which keep their installed OS")] = None,
    count: int = 1, pool: str = "default", raid_level: Annotated[str | None, typer.Option()] = None,
    port: Annotated[list[str] | None, typer.Option(
        # "\[" keeps rich (typer's help renderer) from reading "[/PROTO]" as a closing markup tag.
        help="PORT\\[/PROTO]\\[@CIDR,...] to open, repeatable")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE constraint, repeatable")] = None,
    min_cpus: int = 0, min_memory_mb: int = 0, min_disks: int = 0,
    lease_hours: Annotated[int | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option("--watch", help="follow the jobs until they end")] = False,
) -> None:
    ports = []
    for p in port or []:
        spec, _, cidrs = p.partition("@")
        num, _, proto = spec.partition("/")
        if not num.isdigit():
            raise typer.BadParameter(f"--port {p!r}: expected PORT[/PROTO][@CIDR,...]")
        entry: dict[str, Any] = {"port": int(num), "proto": proto or "tcp"}
        if cidrs:
            entry["sources"] = cidrs.split(",")
        ports.append(entry)
    body = {"image": image, "count": count, "pool": pool, "raid_level": raid_level, "firewall_ports": ports,
            "ssh_public_key": ssh_key.read_text().strip(), "lease_hours": lease_hours,
            "constraints": {"labels": dict(x.split("=", 1) for x in label or [] if "=" in x), "min_cpus": min_cpus,
                            "min_memory_mb": min_memory_mb, "min_disks": min_disks}}
    req = call(client().post, "/v1/requests", body)
    _show_and_watch(req, req["job_ids"] if watch else [])


def _show_and_watch(req: dict[str, Any], job_ids: list[int]) -> None:
    """Scripts get one JSON document ({request, jobs}); people get tables and live views."""
    if STATE["output"] == "json" and job_ids:
        jobs = [watch_job(jid, emit=False, fail=False) for jid in job_ids]
        print(json.dumps({"request": req, "jobs": jobs}, indent=2))
        if any(j["status"] != "succeeded" for j in jobs):
            raise typer.Exit(1)
        return
    show(req)
    failed = [j for j in (watch_job(jid, fail=False) for jid in job_ids) if j["status"] != "succeeded"]
    if failed:
        raise typer.Exit(1)


@requests_app.command("list")
def requests_list(status: Annotated[str | None, typer.Option()] = None, limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/requests", status=status, limit=limit, offset=offset),
         ["id", "tenant_id", "image", "count", "pool", "status", "accepted_at", "ready_at", "host_ids"])


@requests_app.command("show")
def requests_show(request_id: int) -> None:
    show(call(client().get, f"/v1/requests/{request_id}"))


@requests_app.command("release")
def requests_release(request_id: int, watch: Annotated[bool, typer.Option("--watch")] = False) -> None:
    req = call(client().post, f"/v1/requests/{request_id}/release")
    release_jobs = [j["id"] for j in call(client().get, "/v1/jobs", request_id=request_id, kind="release",
                                          limit=500)["items"] if j["status"] in ("queued", "running")]
    _show_and_watch(req, release_jobs if watch else [])


@requests_app.command("reimage")
def requests_reimage(
    request_id: int,
    image: Annotated[str, typer.Option(help="catalogue image to write (provisioner images list)")],
    keep_data: Annotated[bool, typer.Option("--keep-data/--no-keep-data",
                                            help="keep the data array and its files (default) or wipe every disk")
                         ] = True,
    host_id: Annotated[int | None, typer.Option(help="only this host of the request (default: all of them)")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="follow the jobs until they end")] = False,
) -> None:
    """Write a ready request's hosts (enrolled by their BMC) with another image."""
    body: dict[str, Any] = {"image": image, "keep_data": keep_data}
    if host_id is not None:
        body["host_id"] = host_id
    req = call(client().post, f"/v1/requests/{request_id}/reimage", body)
    jobs = [j["id"] for j in call(client().get, "/v1/jobs", request_id=request_id, kind="reimage",
                                  limit=500)["items"] if j["status"] in ("queued", "running")]
    _show_and_watch(req, jobs if watch else [])


@requests_app.command("extend")
def requests_extend(request_id: int, hours: int) -> None:
    """Extend a request's lease (within policy)."""
    show(call(client().post, f"/v1/requests/{request_id}/extend", {"hours": hours}))


@requests_app.command("rate")
def requests_rate(
    request_id: int,
    score: Annotated[int, typer.Argument(min=1, max=5, help="1 (bad) to 5 (excellent); 2 or less escalates")],
    comment: Annotated[str, typer.Option(help="what went well or wrong")] = "",
) -> None:
    """Rate a delivered request, once. A score of 2 or less is an escalation the operators answer."""
    show(call(client().post, f"/v1/requests/{request_id}/rating", {"score": score, "comment": comment}), None)
