"""The `provisioner` command: the service (serve, worker, admin init) and every user action over
the HTTP API, with tables for people and `--output json` for scripts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from provisioner.client import ApiError, Client

app = typer.Typer(help="Self-service host provisioning with guardrails and install-time SLIs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
admin_app = typer.Typer(help="Bootstrap the service.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (admin).", no_args_is_help=True)
users_app = typer.Typer(help="Users (admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (admin).", no_args_is_help=True)
hosts_app = typer.Typer(help="Hosts: enroll, list, commission, maintenance.", no_args_is_help=True)
requests_app = typer.Typer(help="Host requests: ask for hosts, watch, release.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: list, show, events, watch, cancel.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log (auditor, admin).", no_args_is_help=True)
waivers_app = typer.Typer(help="Guardrail waivers: ask, approve (never your own), reject, revoke.",
                          no_args_is_help=True)
policy_app = typer.Typer(help="The guardrail policy (read: everyone; change: operator, admin).", no_args_is_help=True)
images_app = typer.Typer(help="The image catalogue: publish, canary, promote.", no_args_is_help=True)
for sub, name in ((admin_app, "admin"), (tenants_app, "tenants"), (users_app, "users"), (tokens_app, "tokens"),
                  (hosts_app, "hosts"), (requests_app, "requests"), (jobs_app, "jobs"), (audit_app, "audit"),
                  (waivers_app, "waivers"), (policy_app, "policy"), (images_app, "images")):
    app.add_typer(sub, name=name)

console = Console()
err = Console(stderr=True)
STATE: dict[str, Any] = {"output": "table", "url": None, "token": None}


@app.callback()
def _global(
    output: str = typer.Option("table", "--output", "-o", help="table or json"),
    url: str = typer.Option(None, envvar="PROVISIONER_URL", help="API base URL (default http://127.0.0.1:8080)"),
    token: str = typer.Option(None, envvar="PROVISIONER_TOKEN", help="API token (prov_...)"),
) -> None:
    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    STATE.update(output=output, url=url, token=token)


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


# --- the service -------------------------------------------------------------------------------------

@app.command()
def serve(host: str = typer.Option(None, help="bind address (default PROVISIONER_HOST or 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default PROVISIONER_PORT or 8080)"),
          worker: bool = typer.Option(True, "--worker/--no-worker",
                                      help="run worker threads in this process (default with the in-process broker)")
          ) -> None:
    """Run the API (and, embedded, the worker threads and the reconciler)."""
    import uvicorn

    from provisioner.api.app import create_app
    from provisioner.config import get_settings

    s = get_settings()
    if s.embedded_broker and not worker:
        err.print("[yellow]--no-worker with the in-process broker: nothing will run jobs[/yellow]")
    if s.api_workers > 1:
        if s.embedded_broker:
            err.print("[red]error[/red] several API processes need a shared broker (PROVISIONER_BROKER_URL)")
            raise typer.Exit(2)
        # Several processes: uvicorn imports the app factory in each (worker threads stay off).
        os.environ["PROVISIONER_EMBEDDED_WORKER"] = "1" if worker else "0"
        uvicorn.run("provisioner.api.app:app_from_env", factory=True, host=host or s.host, port=port or s.port,
                    workers=s.api_workers, log_level="warning", access_log=s.access_log)
        return
    uvicorn.run(create_app(s, embedded_worker=worker), host=host or s.host, port=port or s.port,
                log_level="info", access_log=s.access_log)


@app.command("worker")
def worker_cmd(processes: int = typer.Option(2, help="worker processes"),
               threads: int = typer.Option(4, help="threads per process"),
               poll_ms: int = typer.Option(50, help="max idle wait between broker polls (ms)")) -> None:
    """Run Dramatiq worker processes (needs PROVISIONER_BROKER_URL=redis://...)."""
    from provisioner.config import get_settings

    if get_settings().embedded_broker:
        err.print("[red]error[/red] `provisioner worker` needs a shared broker: set PROVISIONER_BROKER_URL=redis://...")
        raise typer.Exit(2)
    from workers.worker_process import run_many, run_one

    if processes <= 1:
        run_one(threads, poll_ms)
    else:
        raise typer.Exit(run_many(processes, threads, poll_ms))


@admin_app.command("init")
def admin_init(name: str = typer.Option("admin", help="name of the first admin")) -> None:
    """Create the first admin and print its token once (talks to the database directly)."""
    from provisioner.bootstrap import AlreadyInitialised, init_admin
    from provisioner.db import session_scope

    with session_scope() as s:
        try:
            token = init_admin(s, name)
        except AlreadyInitialised as exc:
            err.print(f"[red]error[/red] {exc}")
            raise typer.Exit(1) from None
    if STATE["output"] == "json":
        print(json.dumps({"name": name, "token": token}))
    else:
        console.print(f"admin [bold]{name}[/bold] created; token (shown once, store it):")
        print(token)


@admin_app.command("migrate")
def admin_migrate() -> None:
    """Bring the database schema to this version (talks to the database directly).

    The service, workers and `admin init` do this on their own when they open the database; this
    command is for upgrading ahead of a rollout, and prints the revision before and after."""
    from provisioner.config import get_settings
    from provisioner.db import make_engine
    from provisioner.migrate import current, head, upgrade

    settings = get_settings()
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            before = current(conn)
        after = upgrade(engine)
    finally:
        engine.dispose()
    if STATE["output"] == "json":
        print(json.dumps({"before": before, "after": after, "head": head()}))
    else:
        console.print(f"schema revision {before or '(none)'} -> [bold]{after}[/bold] (newest: {head()})")


# --- admin objects ----------------------------------------------------------------------------------

@tenants_app.command("create")
def tenants_create(name: str, quota: list[str] = typer.Option([], help="POOL=N, repeatable")) -> None:
    q = {}
    for item in quota:
        pool, _, n = item.partition("=")
        if not n.isdigit():
            raise typer.BadParameter(f"--quota {item!r}: expected POOL=N")
        q[pool] = int(n)
    show(call(client().post, "/v1/tenants", {"name": name, "quota": q}))


@tenants_app.command("list")
def tenants_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/tenants", limit=limit, offset=offset), ["id", "name", "quota", "created_at"])


@users_app.command("create")
def users_create(name: str, role: str = typer.Option(..., help="customer, imager, operator, auditor, admin"),
                 tenant_id: int = typer.Option(None, help="required for customer and imager")) -> None:
    show(call(client().post, "/v1/users", {"name": name, "role": role, "tenant_id": tenant_id}))


@users_app.command("list")
def users_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/users", limit=limit, offset=offset), ["id", "name", "role", "tenant_id", "active"])


@tokens_app.command("create")
def tokens_create(user_id: int, name: str = "", expires_in_days: int = typer.Option(None)) -> None:
    """Create a token for a user; it is printed once."""
    show(call(client().post, f"/v1/users/{user_id}/tokens", {"name": name, "expires_in_days": expires_in_days}))


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    call(client().request, "DELETE", f"/v1/tokens/{token_id}")
    console.print(f"token {token_id} revoked")


# --- hosts --------------------------------------------------------------------------------------------

HOST_COLS = ["id", "name", "address", "pool", "state", "tenant_id", "request_id", "last_restore_at"]


@hosts_app.command("enroll")
def hosts_enroll(name: str, address: str, port: int = 22, user: str = "root",
                 key_file: Path = typer.Option(None, help="private key to store encrypted in the service"),
                 key_path: str = typer.Option(None, help="key path on the worker machines instead"),
                 pool: str = "default", label: list[str] = typer.Option([], help="KEY=VALUE, repeatable"),
                 commission: bool = typer.Option(True, "--commission/--no-commission"),
                 connection: str = typer.Option("ssh", help="ssh, or local (engine tests only; the service "
                                                "must allow it)")) -> None:
    """Enroll a host (operator); it is commissioned right away unless --no-commission."""
    labels = dict(item.split("=", 1) for item in label if "=" in item)
    body: dict[str, Any] = {"name": name, "address": address, "port": port, "ssh_user": user, "pool": pool,
                            "labels": labels, "commission": commission, "connection": connection}
    if key_file:
        body["ssh_private_key"] = key_file.read_text()
    if key_path:
        body["ssh_key_path"] = key_path
    show(call(client().post, "/v1/hosts", body))


@hosts_app.command("list")
def hosts_list(state: str = typer.Option(None), pool: str = typer.Option(None), limit: int = 50,
               offset: int = 0) -> None:
    show(call(client().get, "/v1/hosts", state=state, pool=pool, limit=limit, offset=offset), HOST_COLS)


@hosts_app.command("show")
def hosts_show(host_id: int) -> None:
    show(call(client().get, f"/v1/hosts/{host_id}"))


@hosts_app.command("commission")
def hosts_commission(host_id: int) -> None:
    show(call(client().post, f"/v1/hosts/{host_id}/commission"))


@hosts_app.command("state")
def hosts_state(host_id: int, state: str = typer.Argument(..., help="maintenance, available or retired"),
                reason: str = "") -> None:
    show(call(client().post, f"/v1/hosts/{host_id}/state", {"state": state, "reason": reason}))


# --- requests -----------------------------------------------------------------------------------------

@requests_app.command("create")
def requests_create(
    image: str,
    ssh_key: Path = typer.Option(..., help="public key file installed for the customer user"),
    count: int = 1, pool: str = "default", raid_level: str = typer.Option(None),
    port: list[str] = typer.Option([], help="PORT[/PROTO][@CIDR,...] to open, repeatable"),
    label: list[str] = typer.Option([], help="KEY=VALUE constraint, repeatable"),
    min_cpus: int = 0, min_memory_mb: int = 0, min_disks: int = 0,
    lease_hours: int = typer.Option(None),
    watch: bool = typer.Option(False, "--watch", help="follow the jobs until they end"),
) -> None:
    ports = []
    for p in port:
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
            "constraints": {"labels": dict(x.split("=", 1) for x in label if "=" in x), "min_cpus": min_cpus,
                            "min_memory_mb": min_memory_mb, "min_disks": min_disks}}
    req = call(client().post, "/v1/requests", body)
    _show_and_watch(req, req["job_ids"] if watch else [])


def _show_and_watch(req: dict[str, Any], job_ids: list[int]) -> None:
    """Scripts get one JSON document ({request, jobs}); people get tables and live views."""
    if STATE["output"] == "json" and job_ids:
        jobs = [_watch(jid, emit=False, fail=False) for jid in job_ids]
        print(json.dumps({"request": req, "jobs": jobs}, indent=2))
        if any(j["status"] != "succeeded" for j in jobs):
            raise typer.Exit(1)
        return
    show(req)
    failed = [j for j in (_watch(jid, fail=False) for jid in job_ids) if j["status"] != "succeeded"]
    if failed:
        raise typer.Exit(1)


@requests_app.command("list")
def requests_list(status: str = typer.Option(None), limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/requests", status=status, limit=limit, offset=offset),
         ["id", "tenant_id", "image", "count", "pool", "status", "accepted_at", "ready_at", "host_ids"])


@requests_app.command("show")
def requests_show(request_id: int) -> None:
    show(call(client().get, f"/v1/requests/{request_id}"))


@requests_app.command("release")
def requests_release(request_id: int, watch: bool = typer.Option(False, "--watch")) -> None:
    req = call(client().post, f"/v1/requests/{request_id}/release")
    release_jobs = [j["id"] for j in call(client().get, "/v1/jobs", request_id=request_id, kind="release",
                                          limit=500)["items"] if j["status"] in ("queued", "running")]
    _show_and_watch(req, release_jobs if watch else [])


# --- jobs ---------------------------------------------------------------------------------------------

JOB_COLS = ["id", "kind", "host_id", "request_id", "status", "current_phase", "attempts", "queued_at", "error"]


@jobs_app.command("list")
def jobs_list(status: str = typer.Option(None), kind: str = typer.Option(None), host_id: int = typer.Option(None),
              request_id: int = typer.Option(None), limit: int = 50, offset: int = 0) -> None:
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
    """Live progress of a job: phases and tasks as they run, SLIs at the end."""
    _watch(job_id)


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


def _watch(job_id: int, poll: float = 1.0, *, emit: bool = True, fail: bool = True) -> dict[str, Any]:
    c = client()
    tasks: list[dict[str, Any]] = []
    after = 0
    json_out = STATE["output"] == "json"
    with Live(console=console, refresh_per_second=4, transient=False) if not json_out else _Null() as live:
        while True:
            job = call(c.get, f"/v1/jobs/{job_id}")
            page = call(c.get, f"/v1/jobs/{job_id}/events", after_seq=after, limit=1000)
            for e in page["items"]:
                after = e["seq"]
                if e.get("status"):
                    tasks.append(e)
            if not json_out:
                live.update(_job_view(job, tasks))
            if job["status"] in ("succeeded", "failed", "cancelled") and after >= job["event_count"]:
                break
            time.sleep(poll)
    if json_out and emit:
        print(json.dumps(job, indent=2))
    if fail and job["status"] != "succeeded":
        raise typer.Exit(1)
    return job


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *a: object) -> None:
        return None

    def update(self, *_: object) -> None:
        return None


# --- audit ---------------------------------------------------------------------------------------------

@audit_app.command("list")
def audit_list(action: str = typer.Option(None), object_type: str = typer.Option(None),
               object_id: str = typer.Option(None), actor: str = typer.Option(None), limit: int = 50,
               offset: int = 0) -> None:
    show(call(client().get, "/v1/audit", action=action, object_type=object_type, object_id=object_id, actor=actor,
              limit=limit, offset=offset),
         ["id", "at", "actor_name", "action", "object_type", "object_id", "request_id"])


# --- guardrails ----------------------------------------------------------------------------------------

@hosts_app.command("compliance-check")
def hosts_compliance_check(host_id: int) -> None:
    """Check an active host's guardrails now: restore test, RAID health, firewall."""
    show(call(client().post, f"/v1/hosts/{host_id}/compliance-check"))


@app.command("compliance")
def compliance_summary() -> None:
    """Compliance of active hosts: fleet, per tenant, and every non-compliant host with its reasons."""
    data = call(client().get, "/v1/compliance")
    if STATE["output"] == "json":
        show(data)
        return
    show(data["fleet"])
    for h in data["noncompliant"]:
        console.print(f"[red]{h['name']}[/red] (host {h['host_id']}, tenant {h['tenant_id']}, "
                      f"checked {h['checked_at']})")
        for v in h["violations"]:
            console.print(f"  {v['code']}: {v['message']}\n    [dim]{v['remedy']}[/dim]")


@waivers_app.command("request")
def waivers_request(code: str = typer.Option(..., help="the guardrail code, e.g. backup.required"),
                    scope: str = typer.Option(..., help="tenant:NAME, host:ID or request:ID"),
                    justification: str = typer.Option(..., help="why the rule can't be met now")) -> None:
    show(call(client().post, "/v1/waivers", {"code": code, "scope": scope, "justification": justification}))


@waivers_app.command("list")
def waivers_list(status: str = typer.Option(None), limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/waivers", status=status, limit=limit, offset=offset),
         ["id", "code", "scope", "status", "requested_by", "decided_by", "expires_at"])


@waivers_app.command("approve")
def waivers_approve(waiver_id: int, expires_at: str = typer.Option(..., help="ISO date/time, bounded by policy"),
                    note: str = "") -> None:
    show(call(client().post, f"/v1/waivers/{waiver_id}/approve", {"expires_at": expires_at, "note": note}))


@waivers_app.command("reject")
def waivers_reject(waiver_id: int, note: str = "") -> None:
    show(call(client().post, f"/v1/waivers/{waiver_id}/reject", {"note": note}))


@waivers_app.command("revoke")
def waivers_revoke(waiver_id: int, note: str = "") -> None:
    show(call(client().post, f"/v1/waivers/{waiver_id}/revoke", {"note": note}))


@policy_app.command("show")
def policy_show() -> None:
    show(call(client().get, "/v1/policy"))


@policy_app.command("set")
def policy_set(changes: list[str] = typer.Argument(..., help="FIELD=JSON_VALUE, e.g. max_open_ports=8")) -> None:
    body: dict[str, Any] = {}
    for item in changes:
        key, _, raw = item.partition("=")
        try:
            body[key] = json.loads(raw)
        except json.JSONDecodeError:
            body[key] = raw
    show(call(client().request, "PUT", "/v1/policy", json=body))


@requests_app.command("extend")
def requests_extend(request_id: int, hours: int) -> None:
    """Extend a request's lease (within policy)."""
    show(call(client().post, f"/v1/requests/{request_id}/extend", {"hours": hours}))


# --- images ---------------------------------------------------------------------------------------------

@images_app.command("list")
def images_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/images", limit=limit, offset=offset),
         ["id", "name", "version", "channel", "size", "sha256", "flagged"])


@images_app.command("show")
def images_show(image_id: int) -> None:
    show(call(client().get, f"/v1/images/{image_id}"))


@images_app.command("publish")
def images_publish(path: Path, name: str = typer.Option(...), version: str = typer.Option(...),
                   os_name: str = typer.Option(...), os_version: str = typer.Option(...),
                   fmt: str = typer.Option(None, "--format", help="raw, raw.zst or qcow2 (default: from the name)"),
                   sha256: str = typer.Option(None, help="expected sha256 of the raw content")) -> None:
    """Upload an image (streamed); the service computes its sha256 and block map."""
    fmt = fmt or ("raw.zst" if path.name.endswith(".zst") else "qcow2" if path.suffix == ".qcow2" else "raw")
    params = {"name": name, "version": version, "os_name": os_name, "os_version": os_version, "format": fmt}
    if sha256:
        params["expected_sha256"] = sha256

    def chunks():  # type: ignore[no-untyped-def]
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    c = Client(STATE["url"], STATE["token"], timeout=3600)
    show(call(c.request, "POST", "/v1/images", params=params, content=chunks(),
              headers={"content-type": "application/octet-stream"}))


@images_app.command("canary")
def images_canary(image_id: int, pool: str = "lab", watch: bool = typer.Option(False, "--watch")) -> None:
    """Install the image on a lab host through the normal pipeline (needed before promotion)."""
    out = call(client().post, f"/v1/images/{image_id}/canary", {"pool": pool})
    show(out)
    if watch:
        _watch(out["job_id"])


@images_app.command("promote")
def images_promote(image_id: int, to: str = typer.Argument(..., help="stable, deprecated or retired")) -> None:
    show(call(client().post, f"/v1/images/{image_id}/promote", {"to": to}))


if __name__ == "__main__":
    app()
