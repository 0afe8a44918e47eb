"""`provisioner audit`: the audit log."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli.output import call, client, show

audit_app = typer.Typer(help="The audit log (auditor, admin).", no_args_is_help=True)


# --- audit ---------------------------------------------------------------------------------------------

@audit_app.command("list")
def audit_list(action: Annotated[str | None, typer.Option()] = None,
               object_type: Annotated[str | None, typer.Option()] = None,
               object_id: Annotated[str | None, typer.Option()] = None,
               actor: Annotated[str | None, typer.Option()] = None, limit: int = 50,
               offset: int = 0) -> None:
    show(call(client().get, "/v1/audit", action=action, object_type=object_type, object_id=object_id, actor=actor,
              limit=limit, offset=offset),
         ["id", "at", "actor_name", "action", "object_type", "object_id", "request_id"])
