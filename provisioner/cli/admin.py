"""Bootstrap and admin objects: `admin init|migrate|new-secret-key|rotate-secrets`, tenants, users, tokens."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from provisioner.cli.output import STATE, call, client, console, err, show

admin_app = typer.Typer(help="Bootstrap the service.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (admin).", no_args_is_help=True)
users_app = typer.Typer(help="Users (admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (admin).", no_args_is_help=True)


@admin_app.command("init")
def admin_init(name: Annotated[str, typer.Option(help="name of the first admin")] = "admin") -> None:
    """Create the first admin and print its token once (talks to the database directly)."""
    from provisioner.services.bootstrap import AlreadyInitialised, init_admin
    from provisioner.store.db import session_scope

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
    from provisioner.store.config import get_settings
    from provisioner.store.db import make_engine
    from provisioner.store.migrate import current, head, upgrade

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


@admin_app.command("new-secret-key")
def admin_new_secret_key() -> None:
    """Print a fresh Fernet key for PROVISIONER_SECRET_KEY / PROVISIONER_SECRET_KEY_FILE (put it first)."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())


@admin_app.command("rotate-secrets")
def admin_rotate_secrets() -> None:
    """Re-encrypt every stored secret with the newest key of the key set (talks to the database directly).

    Rotation: give every API and worker process the new key after the old one, then first, then run
    this; when it reports 0 undecryptable, the old key can be dropped everywhere. Exits 1 when a
    secret could not be decrypted with any key (those rows are listed and left unchanged)."""
    from provisioner.services.secret_rotation import rotate_secrets
    from provisioner.store.config import get_settings
    from provisioner.store.db import session_scope

    settings = get_settings()
    with session_scope(settings) as s:
        report = rotate_secrets(s, settings)
    if STATE["output"] == "json":
        print(json.dumps(report.as_dict()))
    else:
        console.print(f"key {report.key_id} (newest of {report.keys_in_set}): re-encrypted {report.reencrypted}, "
                      f"already current {report.already_current}, changed meanwhile {report.changed_meanwhile}, "
                      f"undecryptable {len(report.undecryptable)}")
        for row in report.undecryptable:
            err.print(f"[red]undecryptable[/red] {row}")
    if report.undecryptable:
        raise typer.Exit(1)


# --- admin objects ----------------------------------------------------------------------------------

@tenants_app.command("create")
def tenants_create(name: str,
                   quota: Annotated[list[str] | None, typer.Option(help="POOL=N, repeatable")] = None) -> None:
    q = {}
    for item in quota or []:
        pool, _, n = item.partition("=")
        if not n.isdigit():
            raise typer.BadParameter(f"--quota {item!r}: expected POOL=N")
        q[pool] = int(n)
    show(call(client().post, "/v1/tenants", {"name": name, "quota": q}))


@tenants_app.command("list")
def tenants_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/tenants", limit=limit, offset=offset), ["id", "name", "quota", "created_at"])


@users_app.command("create")
def users_create(name: str, role: Annotated[str, typer.Option(help="customer, imager, operator, auditor, admin")],
                 tenant_id: Annotated[int | None,
                                      typer.Option(help="required for customer and imager")] = None) -> None:
    show(call(client().post, "/v1/users", {"name": name, "role": role, "tenant_id": tenant_id}))


@users_app.command("list")
def users_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/users", limit=limit, offset=offset), ["id", "name", "role", "tenant_id", "active"])


@tokens_app.command("create")
def tokens_create(user_id: int, name: str = "", expires_in_days: Annotated[int | None, typer.Option()] = None) -> None:
    """Create a token for a user; it is printed once."""
    show(call(client().post, f"/v1/users/{user_id}/tokens", {"name": name, "expires_in_days": expires_in_days}))


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    call(client().request, "DELETE", f"/v1/tokens/{token_id}")
    console.print(f"token {token_id} revoked")
