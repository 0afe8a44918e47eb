"""Guardrails: the compliance summary, waivers and the policy."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from provisioner.cli.output import STATE, call, client, console, show

waivers_app = typer.Typer(help="Guardrail waivers: ask, approve (never your own), reject, revoke.",
                          no_args_is_help=True)
policy_app = typer.Typer(help="The guardrail policy (read: everyone; change: operator, admin).", no_args_is_help=True)


# --- guardrails ----------------------------------------------------------------------------------------


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
def waivers_request(code: Annotated[str, typer.Option(help="the guardrail code, e.g. backup.required")],
                    scope: Annotated[str, typer.Option(help="tenant:NAME, host:ID or request:ID")],
                    justification: Annotated[str, typer.Option(help="why the rule can't be met now")]) -> None:
    show(call(client().post, "/v1/waivers", {"code": code, "scope": scope, "justification": justification}))


@waivers_app.command("list")
def waivers_list(status: Annotated[str | None, typer.Option()] = None, limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/waivers", status=status, limit=limit, offset=offset),
         ["id", "code", "scope", "status", "requested_by", "decided_by", "expires_at"])


@waivers_app.command("approve")
def waivers_approve(waiver_id: int, expires_at: Annotated[str, typer.Option(help="ISO date/time, bounded by policy")],
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
def policy_set(changes: Annotated[list[str], typer.Argument(help="FIELD=JSON_VALUE, e.g. max_open_ports=8")]) -> None:
    body: dict[str, Any] = {}
    for item in changes:
        key, _, raw = item.partition("=")
        try:
            body[key] = json.loads(raw)
        except json.JSONDecodeError:
            body[key] = raw
    show(call(client().request, "PUT", "/v1/policy", json=body))
