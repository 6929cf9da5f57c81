"""The ``apexsync`` command line."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import or_, select

from shared.db import session_scope
from shared.models import ACTIVE_RUN_STATES, Facility, SyncRun
from shared.settings import get_settings

app = typer.Typer(
    name="apexsync",
    help="Keep Flourish inventory and Apex Trading batches, buyers and orders in step.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
sync_app = typer.Typer(help="Start syncs by hand.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect sync runs.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

console = Console()
errors = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.")
]


def fail(message: str) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def find_facility(session: Any, reference: str) -> Facility:
    """Find a facility by id, name or Flourish facility id."""
    conditions = [
        Facility.name == reference,
        Facility.flourish_facility_id == reference,
    ]
    if reference.isdigit():
        conditions.append(Facility.id == int(reference))
    matches = list(session.scalars(select(Facility).where(or_(*conditions))))
    if not matches:
        raise fail(
            f"Facility {reference!r} not found. "
            "List them with `apexsync facilities list`."
        )
    if len(matches) > 1:
        ids = ", ".join(str(match.id) for match in matches)
        raise fail(f"Facility {reference!r} is ambiguous (ids {ids}). Use the id.")
    return matches[0]


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Alembic revision."),
) -> None:
    """Apply the database migrations."""
    from shared.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    console.print(f"Database is at revision {revision}.")


@sync_app.command("inventory")
def sync_inventory(
    facility: str = typer.Argument(..., help="Facility id or name."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the run ends."),
    timeout: float = typer.Option(3600, help="Seconds to wait with --wait."),
    as_json: JsonOption = False,
) -> None:
    """Sync one facility's packages to Apex now."""
    from datetime import timedelta

    from shared.runs import SyncAlreadyRunning, create_run
    from tasks.inventory import publish_run

    deadline = timedelta(seconds=get_settings().run_deadline_seconds)
    with session_scope() as session:
        target = find_facility(session, facility)
        try:
            run = create_run(session, target, "manual", deadline)
        except SyncAlreadyRunning as busy:
            raise fail(str(busy)) from None
        run_id = run.id
    publish_run(run_id)
    if not as_json:
        console.print(f"Sync run {run_id} queued for facility {facility}.")
    if wait:
        wait_for_runs([run_id], timeout)
        _show_run(run_id, as_json)
        _exit_for_runs([run_id])
    elif as_json:
        print(json.dumps({"run_id": run_id}))


def wait_for_runs(run_ids: list[int], timeout: float) -> None:
    """Show a progress bar until every run has ended or ``timeout`` passes."""
    from rich.progress import Progress

    deadline = time.monotonic() + timeout
    with Progress(console=errors, transient=True) as progress:
        bar = progress.add_task("Syncing", total=len(run_ids))
        while time.monotonic() < deadline:
            done, pages = _progress_of(run_ids)
            progress.update(
                bar, completed=done, description=f"Syncing ({pages} pages done)"
            )
            if done == len(run_ids):
                return
            time.sleep(0.5)
    raise fail(
        f"Runs {run_ids} did not finish within {timeout:.0f} s; "
        "see `apexsync runs list`."
    )


def _progress_of(run_ids: list[int]) -> tuple[int, int]:
    with session_scope() as session:
        rows = list(session.scalars(select(SyncRun).where(SyncRun.id.in_(run_ids))))
    done = sum(1 for row in rows if row.state not in ACTIVE_RUN_STATES)
    return done, sum(row.pages for row in rows)


def _exit_for_runs(run_ids: list[int]) -> None:
    with session_scope() as session:
        states = list(
            session.scalars(select(SyncRun.state).where(SyncRun.id.in_(run_ids)))
        )
    if any(state != "succeeded" for state in states):
        raise typer.Exit(1)


@runs_app.command("list")
def runs_list(
    facility: str | None = typer.Option(None, help="Only this facility (id or name)."),
    limit: int = typer.Option(20, help="How many of the newest runs to show."),
    as_json: JsonOption = False,
) -> None:
    """List recent sync runs, newest first."""
    from shared.reports import list_runs

    with session_scope() as session:
        facility_id = find_facility(session, facility).id if facility else None
        rows = list_runs(session, facility_id, limit)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Sync runs")
    for column in (
        "id",
        "tenant",
        "facility",
        "trigger",
        "state",
        "duration",
        "fetched",
        "created",
        "skipped",
        "unmapped",
        "failed",
        "requests apex/flourish",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["tenant"]),
            str(row["facility"]),
            row["trigger"],
            row["state"],
            _seconds(row["duration_seconds"]),
            str(row["fetched"]),
            str(row["created"]),
            str(row["skipped"]),
            str(row["unmapped"]),
            str(row["failed"]),
            f"{row['apex_requests']}/{row['flourish_requests']}",
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run: int = typer.Argument(..., help="Run id."), as_json: JsonOption = False
) -> None:
    """Show one run: counts, skipped packages with reasons, unmapped SKUs."""
    _show_run(run, as_json)


def _show_run(run_id: int, as_json: bool) -> None:
    from shared.reports import run_details

    with session_scope() as session:
        run = session.get(SyncRun, run_id)
        if run is None:
            raise fail(
                f"Sync run {run_id} not found. List them with `apexsync runs list`."
            )
        details = run_details(session, run)
    if as_json:
        print(json.dumps(details, indent=2))
        return
    print_run_details(details)


def print_run_details(details: dict[str, Any]) -> None:
    counts = ", ".join(
        f"{key} {details[key]}"
        for key in ("fetched", "created", "skipped", "unmapped", "failed")
    )
    console.print(
        f"[bold]Run {details['id']}[/bold] "
        f"{details['tenant']} / {details['facility']}: "
        f"{details['state']} in {_seconds(details['duration_seconds'])}; {counts}; "
        f"requests apex {details['apex_requests']}, "
        f"flourish {details['flourish_requests']}"
    )
    if details["error"]:
        console.print(f"[red]error:[/red] {details['error']}")
    _print_reasons("Skipped", details["skipped_by_reason"])
    _print_reasons("Failed", details["failed_by_reason"])
    if details["unmapped_skus"]:
        table = Table(title="Unmapped SKUs (no Apex product with this product_sku)")
        table.add_column("SKU")
        table.add_column("packages", justify="right")
        for row in details["unmapped_skus"]:
            table.add_row(row["sku"], str(row["packages"]))
        console.print(table)


def _print_reasons(title: str, groups: list[dict[str, Any]]) -> None:
    if not groups:
        return
    table = Table(title=f"{title} packages")
    table.add_column("reason")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for group in groups:
        table.add_row(
            group["reason"], str(group["count"]), ", ".join(group["packages"])
        )
    console.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


@app.command()
def worker(
    queues: str = typer.Option(
        "inventory,orders,default", help="Queues to consume, comma separated."
    ),
    concurrency: int = typer.Option(2, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
    hostname: str | None = typer.Option(
        None, help="Worker node name (default: Celery's)."
    ),
) -> None:
    """Run a Celery worker."""
    from shared.logging import configure_logging
    from workers.app import app as celery_app

    configure_logging(loglevel)
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)


@app.command()
def beat(loglevel: str = typer.Option("INFO", help="Log level.")) -> None:
    """Run Celery beat, which enqueues due syncs, order polls and the reconciler."""
    from shared.logging import configure_logging
    from workers.app import app as celery_app

    configure_logging(loglevel)
    schedule = get_settings().state_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])


@app.command()
def demo(
    packages: int = typer.Option(1500, help="Packages the sandbox seeds."),
    timeout: float = typer.Option(900, help="Seconds to wait for the syncs."),
) -> None:
    """Run the whole service on the embedded default against the sandbox."""
    from workers.demo import run_demo

    raise typer.Exit(run_demo(packages=packages, timeout=timeout))


def _register_optional_apps() -> None:
    """Add the command groups that live in their own modules."""
    from workers import cli_dlq

    app.add_typer(cli_dlq.dlq_app, name="dlq")
    for module_name, names in (
        ("workers.cli_orders", {"orders_app": "orders"}),
        ("workers.cli_buyers", {"buyers_app": "buyers"}),
        (
            "workers.cli_tenants",
            {
                "tenants_app": "tenants",
                "facilities_app": "facilities",
                "secrets_app": "secrets",
            },
        ),
    ):
        module = __import__(module_name, fromlist=list(names))
        for attribute, name in names.items():
            app.add_typer(getattr(module, attribute), name=name)
    from workers import cli_tenants, flower

    app.command("status")(cli_tenants.status_command)
    app.command("flower")(flower.flower_command)


_register_optional_apps()


def main() -> None:
    app(prog_name="apexsync")


if __name__ == "__main__":
    main()
