"""`provisioner images`: the catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli.jobs import watch_job
from provisioner.cli.output import STATE, call, client, show
from provisioner.client import Client

images_app = typer.Typer(help="The image catalogue: publish, canary, promote.", no_args_is_help=True)


# --- images ---------------------------------------------------------------------------------------------

@images_app.command("list")
def images_list(limit: int = 50, offset: int = 0) -> None:
    show(call(client().get, "/v1/images", limit=limit, offset=offset),
         ["id", "name", "version", "channel", "size", "sha256", "flagged"])


@images_app.command("show")
def images_show(image_id: int) -> None:
    show(call(client().get, f"/v1/images/{image_id}"))


@images_app.command("publish")
def images_publish(path: Path, name: Annotated[str, typer.Option()], version: Annotated[str, typer.Option()],
                   os_name: Annotated[str, typer.Option()], os_version: Annotated[str, typer.Option()],
                   fmt: Annotated[str | None, typer.Option(
                       "--format", help="raw, raw.zst or qcow2 (default: from the name)")] = None,
                   sha256: Annotated[str | None,
                                     typer.Option(help="expected sha256 of the raw content")] = None) -> None:
    """Upload an image (streamed); the service computes its sha256 and block map."""
    fmt = fmt or ("raw.zst" if path.name.endswith(".zst") else "qcow2" if path.suffix == ".qcow2" else "raw")
    params = {"name": name, "version": version, "os_name": os_name, "os_version": os_version, "format": fmt}
    if sha256:
        params["expected_sha256"] = sha256

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                yield block

    c = Client(STATE["url"], STATE["token"], timeout=3600)
    show(call(c.request, "POST", "/v1/images", params=params, content=chunks(),
              headers={"content-type": "application/octet-stream"}))


@images_app.command("canary")
def images_canary(image_id: int, pool: str = "lab", watch: Annotated[bool, typer.Option("--watch")] = False) -> None:
    """Install the image on a lab host through the normal pipeline (needed before promotion)."""
    out = call(client().post, f"/v1/images/{image_id}/canary", {"pool": pool})
    show(out)
    if watch:
        watch_job(out["job_id"])


@images_app.command("promote")
def images_promote(image_id: int, to: Annotated[str, typer.Argument(help="stable, deprecated or retired")]) -> None:
    show(call(client().post, f"/v1/images/{image_id}/promote", {"to": to}))

