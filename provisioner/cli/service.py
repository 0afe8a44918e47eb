"""`provisioner serve` and `provisioner worker`: the composition root.

The one place where a service process is put together: the API, the doorbell that the services
ring after a commit (Dramatiq's actor), and what runs beside the API in the same process (worker
threads with the in-process broker, the reconciler), or Dramatiq worker processes (distributed).
Nothing else in `provisioner/` imports `workers/` (an import-linter contract keeps it so). The
background side is imported lazily: importing the actors creates the broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from provisioner.cli.output import err

if TYPE_CHECKING:  # the web stack and the settings load only where used: client commands start sooner
    from fastapi import FastAPI

    from provisioner.store.config import Settings


def check_keys(s: Settings) -> None:
    """Refuse to start with an unusable key set; warn when a distributed setup uses a per-machine key."""
    from provisioner.store.keyset import KeyConfigError, key_set

    try:
        key_set(s)
    except KeyConfigError as exc:
        err.print(f"[red]error[/red] {exc.detail}\nhint: {exc.hint}")
        raise typer.Exit(2) from None
    if not s.embedded_broker and not (s.secret_key or s.secret_key_file):
        err.print(f"[yellow]the key set is this machine's {s.data_dir / 'secret.key'}: processes on other machines "
                  "cannot decrypt what it encrypts nor check its image tokens; set PROVISIONER_SECRET_KEY or "
                  "PROVISIONER_SECRET_KEY_FILE to the same keys everywhere[/yellow]")


def install_doorbell() -> None:
    """Jobs committed by this process are announced through Dramatiq (Redis or in-process)."""
    from provisioner.services import doorbell
    from workers.actors import enqueue

    doorbell.install(enqueue)


def build_app(settings: Settings | None = None, *, embedded_worker: bool | None = None) -> FastAPI:
    """The API with the doorbell installed and, unless told otherwise, worker threads (in-process
    broker) and the reconciler running for as long as the app runs."""
    from provisioner.api.app import create_app
    from provisioner.store.config import get_settings
    from provisioner.web import dashboard, review_page

    settings = settings or get_settings()
    run_worker = settings.embedded_broker if embedded_worker is None else embedded_worker
    install_doorbell()

    @contextmanager
    def background() -> Iterator[None]:
        from workers.broker import get_broker
        from workers.private_dirs import owner_dir, sweep_stale
        from workers.reconciler import Reconciler
        from workers.webhook_dispatch import WebhookDispatcher

        worker = None
        if run_worker:
            import dramatiq

            owner_dir(settings)
            sweep_stale(settings)  # private data dirs (with secrets) of a worker that died here

            worker = dramatiq.Worker(get_broker(), worker_threads=settings.worker_threads, worker_timeout=100)
            worker.start()
        rec = Reconciler(settings).start() if settings.run_reconciler else None
        # The dispatcher claims each delivery with a compare-and-set: any number of API processes may run it.
        hooks = WebhookDispatcher(settings).start() if settings.run_reconciler else None
        try:
            yield
        finally:
            if hooks:
                hooks.stop()
            if rec:
                rec.stop()
            if worker:
                worker.stop(timeout=10_000)

    app = create_app(settings, background=background)
    dashboard.install(app)
    review_page.install(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for multi-process uvicorn (`PROVISIONER_API_WORKERS` > 1)."""
    from provisioner.store.config import get_settings

    return build_app(get_settings(), embedded_worker=os.environ.get("PROVISIONER_EMBEDDED_WORKER") == "1")


def serve(host: Annotated[str | None, typer.Option(help="bind address (default PROVISIONER_HOST or 127.0.0.1)")] = None,
          port: Annotated[int | None, typer.Option(help="port (default PROVISIONER_PORT or 8080)")] = None,
          worker: Annotated[bool, typer.Option(
              "--worker/--no-worker",
              help="run worker threads in this process (default with the in-process broker)")] = True
          ) -> None:
    """Run the API (and, embedded, the worker threads and the reconciler)."""
    import uvicorn

    from provisioner.store.config import get_settings

    s = get_settings()
    check_keys(s)
    if s.embedded_broker and not worker:
        err.print("[yellow]--no-worker with the in-process broker: nothing will run jobs[/yellow]")
    if s.api_workers > 1:
        if s.embedded_broker:
            err.print("[red]error[/red] several API processes need a shared broker (PROVISIONER_BROKER_URL)")
            raise typer.Exit(2)
        # Several processes: uvicorn imports the app factory in each (worker threads stay off).
        os.environ["PROVISIONER_EMBEDDED_WORKER"] = "1" if worker else "0"
        uvicorn.run("provisioner.cli.service:app_from_env", factory=True, host=host or s.host, port=port or s.port,
                    workers=s.api_workers, log_level="warning", access_log=s.access_log)
        return
    uvicorn.run(build_app(s, embedded_worker=worker), host=host or s.host, port=port or s.port,
                log_level="info", access_log=s.access_log)


def worker_cmd(processes: Annotated[int, typer.Option(help="worker processes")] = 2,
               threads: Annotated[int, typer.Option(help="threads per process")] = 4,
               poll_ms: Annotated[int, typer.Option(help="max idle wait between broker polls (ms)")] = 50) -> None:
    """Run Dramatiq worker processes (needs PROVISIONER_BROKER_URL=redis://...)."""
    from provisioner.store.config import get_settings

    check_keys(get_settings())
    if get_settings().embedded_broker:
        err.print("[red]error[/red] `provisioner worker` needs a shared broker: set PROVISIONER_BROKER_URL=redis://...")
        raise typer.Exit(2)
    from workers.worker_process import run_many, run_one

    install_doorbell()
    if processes <= 1:
        run_one(threads, poll_ms)
    else:
        raise typer.Exit(run_many(processes, threads, poll_ms))
