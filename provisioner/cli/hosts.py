"""`provisioner hosts`: enroll, list, commission, power, state, re-pin a host key, compliance checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from provisioner.cli.output import call, client, show

hosts_app = typer.Typer(help="Hosts: enroll (SSH or Redfish BMC), list, commission, power, maintenance, re-pin "
                             "SSH host keys.",
                        no_args_is_help=True)


# --- hosts --------------------------------------------------------------------------------------------

HOST_COLS = ["id", "name", "address", "driver", "pool", "state", "tenant_id", "request_id", "last_restore_at"]


@hosts_app.command("enroll")
def hosts_enroll(name: str,
                 address: Annotated[str | None, typer.Argument(
                     help="the host's address (a BMC host: the address its NIC gets on the provisioning "
                          "network, where its deploy ramdisk and deployed OS answer)")] = None,
                 port: int = 22, user: str = "root",
                 key_file: Annotated[Path | None,
                                     typer.Option(help="private key to store encrypted in the service")] = None,
                 key_path: Annotated[str | None, typer.Option(help="key path on the worker machines instead")] = None,
                 pool: str = "default",
                 label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
                 commission: Annotated[bool | None, typer.Option(
                     "--commission/--no-commission", help="default: yes for ssh hosts, no for BMC hosts")] = None,
                 connection: Annotated[str, typer.Option(help="ssh, or local (engine tests only; the service "
                                                "must allow it)")] = "ssh",
                 fingerprint: Annotated[str | None, typer.Option(
                     help="SHA256:... the host's SSH host key must have (ssh-keygen -lf on the host); "
                          "enrollment is refused when it differs")] = None,
                 bmc_url: Annotated[str | None, typer.Option(
                     help="enroll a bare-metal host by its Redfish BMC: https://HOST[:PORT]")] = None,
                 bmc_user: Annotated[str | None, typer.Option(help="the BMC user")] = None,
                 bmc_password_file: Annotated[Path | None, typer.Option(
                     help="file holding the BMC password, byte for byte (write it without a final newline: "
                          "printf %s); stored encrypted, never shown")] = None,
                 bmc_cert: Annotated[Path | None, typer.Option(
                     help="the BMC's TLS certificate (PEM); its SHA-256 fingerprint is pinned")] = None,
                 bmc_cert_fingerprint: Annotated[str | None, typer.Option(
                     help="or the fingerprint itself (openssl x509 -noout -fingerprint -sha256)")] = None,
                 console_log: Annotated[str | None, typer.Option(
                     help="the host's serial console log on the worker machines, inside "
                          "PROVISIONER_CONSOLE_LOG_DIR: its end is attached to a job whose ramdisk or deployed "
                          "OS never answered (boot.timeout)")] = None) -> None:
    """Enroll a host (operator): over SSH, or a bare-metal host by its Redfish BMC.

    An ssh host is commissioned right away unless --no-commission. The service reads its SSH host key
    before it stores anything, pins it and shows its fingerprint (host_key_fingerprint): compare it
    with `ssh-keygen -lf` on the host's console, or pass --fingerprint to have a different key refused.

    A BMC host (--bmc-url, --bmc-user, --bmc-password-file, and --bmc-cert or --bmc-cert-fingerprint)
    is reached over https with that certificate pinned; the facts its BMC knows (CPUs, memory, MACs)
    are recorded. An unreachable BMC, refused credentials or another certificate are refused with the
    BMC's own words, and nothing is stored. With --commission its commission job re-reads the facts,
    powers it off and makes it available; a provision job then deploys its image through the BMC."""
    labels = dict(item.split("=", 1) for item in label or [] if "=" in item)
    body: dict[str, Any] = {"name": name, "port": port, "ssh_user": user, "pool": pool,
                            "labels": labels, "connection": connection}
    if address:
        body["address"] = address
    if commission is not None:
        body["commission"] = commission
    if bmc_url or bmc_user or bmc_password_file:
        if not (bmc_url and bmc_user and bmc_password_file):
            raise typer.BadParameter("a BMC host needs --bmc-url, --bmc-user and --bmc-password-file")
        # Byte for byte, like a key file: a secret is never stripped or normalised.
        body["bmc"] = {"url": bmc_url, "username": bmc_user, "password": bmc_password_file.read_bytes().decode()}
        if bmc_cert:
            body["bmc"]["cert_pem"] = bmc_cert.read_text()
        if bmc_cert_fingerprint:
            body["bmc"]["cert_fingerprint"] = bmc_cert_fingerprint
    if key_file:
        # Byte for byte: a key file's final newline is part of the key.
        body["ssh_private_key"] = key_file.read_bytes().decode()
    if key_path:
        body["ssh_key_path"] = key_path
    if fingerprint:
        body["host_key_fingerprint"] = fingerprint
    if console_log:
        body["console_log"] = console_log
    show(call(client().post, "/v1/hosts", body))


@hosts_app.command("power")
def hosts_power(host_id: int, action: Annotated[str, typer.Argument(
        help="status (default), on, off (forced) or reset (forced restart)")] = "status",
        reason: str = "") -> None:
    """See or change a bare-metal host's power through its BMC (operator; changes are audited)."""
    if action == "status":
        show(call(client().get, f"/v1/hosts/{host_id}/power"))
    elif action in ("on", "off", "reset"):
        show(call(client().post, f"/v1/hosts/{host_id}/power", {"action": action, "reason": reason}))
    else:
        raise typer.BadParameter(f"unknown power action {action!r}: status, on, off or reset")


@hosts_app.command("list")
def hosts_list(state: Annotated[str | None, typer.Option()] = None,
               pool: Annotated[str | None, typer.Option()] = None, limit: int = 50,
               offset: int = 0) -> None:
    show(call(client().get, "/v1/hosts", state=state, pool=pool, limit=limit, offset=offset), HOST_COLS)


@hosts_app.command("show")
def hosts_show(host_id: int) -> None:
    """Show a host: facts, phase results, its last compliance verdict (what was waived) and the
    approved waivers it runs under."""
    show(call(client().get, f"/v1/hosts/{host_id}"))


@hosts_app.command("commission")
def hosts_commission(host_id: int) -> None:
    show(call(client().post, f"/v1/hosts/{host_id}/commission"))


@hosts_app.command("state")
def hosts_state(host_id: int, state: Annotated[str, typer.Argument(help="maintenance, available or retired")],
                reason: str = "") -> None:
    show(call(client().post, f"/v1/hosts/{host_id}/state", {"state": state, "reason": reason}))


@hosts_app.command("repin")
def hosts_repin(host_id: int, fingerprint: Annotated[str | None, typer.Option(
        help="SHA256:... the new key must have (check it on the host's console); without it whatever "
             "key answers at the host's address is pinned")] = None) -> None:
    """Re-pin a host's SSH host key (audited), e.g. after a job failed with host.key_changed.

    The state is left alone: commission the host afterwards to bring it back to the pool."""
    show(call(client().post, f"/v1/hosts/{host_id}/repin", {"fingerprint": fingerprint}))


@hosts_app.command("compliance-check")
def hosts_compliance_check(host_id: int) -> None:
    """Check an active host's guardrails now: restore test, RAID health, firewall, and that the
    installed backup (paths, retention, schedule) is what the request asked for."""
    show(call(client().post, f"/v1/hosts/{host_id}/compliance-check"))
