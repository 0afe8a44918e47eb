"""The `provisioner` command: the service (serve, worker, admin init) and every user action over
the HTTP API, with tables for people and `--output json` for scripts. One module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli import admin, audit, guardrails, hosts, images, jobs, notify, requests, review, service, slo
from provisioner.cli.output import STATE

app = typer.Typer(help="Self-service host provisioning with guardrails and install-time SLIs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _global(
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    url: Annotated[str | None,
                   typer.Option(envvar="PROVISIONER_URL", help="API base URL (default http://127.0.0.1:8080)")] = None,
    token: Annotated[str | None, typer.Option(envvar="PROVISIONER_TOKEN", help="API token (prov_...)")] = None,
) -> None:
    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    STATE.update(output=output, url=url, token=token)


app.command()(service.serve)
app.command("worker")(service.worker_cmd)
app.command("compliance")(guardrails.compliance_summary)
app.command("slo")(slo.slo_status)
for sub, name in ((admin.admin_app, "admin"), (admin.tenants_app, "tenants"), (admin.users_app, "users"),
                  (admin.tokens_app, "tokens"), (hosts.hosts_app, "hosts"), (requests.requests_app, "requests"),
                  (jobs.jobs_app, "jobs"), (audit.audit_app, "audit"), (guardrails.waivers_app, "waivers"),
                  (guardrails.policy_app, "policy"), (images.images_app, "images"),
                  (notify.webhooks_app, "webhooks"), (notify.escalations_app, "escalations"),
                  (review.review_app, "review")):
    app.add_typer(sub, name=name)

__all__ = ["STATE", "app"]
