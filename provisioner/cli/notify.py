"""`provisioner webhooks` (a tenant's webhooks and their delivery log) and `provisioner escalations`
(low ratings the operators answer)."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli.output import STATE, call, client, console, show
from provisioner.core.webhook_rules import EVENT_TYPES

webhooks_app = typer.Typer(help="Webhooks: signed notifications of your tenant's events.", no_args_is_help=True)
escalations_app = typer.Typer(help="Escalations: low ratings waiting for an operator's answer.",
                              no_args_is_help=True)


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="https://... (or http:// to a loopback address)")],
    event: Annotated[list[str], typer.Option("--event", "-e", help="repeatable: " + ", ".join(EVENT_TYPES))],
    description: str = "",
    tenant_id: Annotated[int | None, typer.Option(help="admins: the tenant it belongs to")] = None,
) -> None:
    """Register a webhook. Its signing secret is printed once: store it where your receiver reads it."""
    body = {"url": url, "events": event, "description": description, "tenant_id": tenant_id}
    hook = call(client().post, "/v1/webhooks", {k: v for k, v in body.items() if v is not None})
    show(hook, None)
    if STATE["output"] != "json":
        console.print("[yellow]The secret is shown only now.[/yellow] Receivers verify "
                      "webhook-signature with it (Standard Webhooks).")


@webhooks_app.command("list")
def webhooks_list(limit: int = 50, offset: int = 0) -> None:
    """The webhooks you manage (secrets are never listed)."""
    show(call(client().get, "/v1/webhooks", limit=limit, offset=offset),
         ["id", "tenant_id", "url", "events", "description", "created_by", "created_at"])


@webhooks_app.command("deliveries")
def webhooks_deliveries(webhook_id: int,
                        status: Annotated[str | None, typer.Option(help="pending, delivered or failed")] = None,
                        limit: int = 50, offset: int = 0) -> None:
    """A webhook's delivery log, newest first (each attempt is in --output json)."""
    show(call(client().get, f"/v1/webhooks/{webhook_id}/deliveries", status=status, limit=limit, offset=offset),
         ["id", "event_type", "msg_id", "status", "attempts", "next_attempt_at", "delivered_at", "last_error"])


@webhooks_app.command("rm")
def webhooks_rm(webhook_id: int) -> None:
    """Remove a webhook; its pending deliveries end as failed, the log stays readable."""
    call(client().delete, f"/v1/webhooks/{webhook_id}")
    if STATE["output"] != "json":
        console.print(f"webhook {webhook_id} removed")


@escalations_app.command("list")
def escalations_list(status: Annotated[str, typer.Option(help="open or answered")] = "open",
                     limit: int = 50, offset: int = 0) -> None:
    """Low ratings (2 or less): the open ones wait for an operator's answer."""
    show(call(client().get, "/v1/escalations", status=status, limit=limit, offset=offset),
         ["id", "request_id", "tenant_id", "score", "comment", "created_at", "escalation", "answered_by"])


@escalations_app.command("answer")
def escalations_answer(rating_id: int, answer: Annotated[str, typer.Argument(help="what was done about it")]) -> None:
    """Answer an open escalation: it leaves the open list; the answer is audited."""
    show(call(client().post, f"/v1/escalations/{rating_id}/answer", {"answer": answer}), None)
