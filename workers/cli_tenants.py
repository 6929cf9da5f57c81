"""``apexsync tenants|facilities|secrets|status``: operating the tenants.

Credentials come from a hidden prompt, an environment variable or an
option, and are never printed. Every add or update that touches a
credential, a facility id, a room or an operation is checked against the
configured Apex and Flourish URLs before anything is saved.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from shared import tenants as ops
from shared.db import session_scope
from shared.models import Facility, Tenant
from shared.secrets import SecretKeyError, Vault, generate_key
from shared.settings import get_settings

tenants_app = typer.Typer(
    help="Add, list, show and change tenants.", no_args_is_help=True
)
facilities_app = typer.Typer(
    help="Add, list, show, change, pause and resume facilities.", no_args_is_help=True
)
secrets_app = typer.Typer(
    help="Create and rotate the encryption key.", no_args_is_help=True
)

stdout = Console()
stderr = Console(stderr=True)

#: Seconds the status command waits for Apex before showing credits as unknown.
STATUS_HTTP_TIMEOUT = 10.0

_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_INTERVAL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

JSON_HELP = "Print JSON instead of a table."
TENANT_HELP = "Tenant id or name."
FACILITY_HELP = "Facility id or name."
ONLY_TENANT_HELP = "Only the facilities of this tenant (id or name)."
INTERVAL_HELP = "Time between scheduled syncs: seconds, or a number with s, m, h or d."


# Shared plumbing -------------------------------------------------------------


def _fail(message: str) -> typer.Exit:
    stderr.print(message, markup=False, highlight=False)
    return typer.Exit(1)


@contextmanager
def _operation() -> Iterator[Session]:
    """Open a session and turn the errors an operator can fix into exit 1."""
    try:
        with session_scope() as session:
            yield session
    except ops.CheckFailed as exc:
        problems = "\n".join(f"- {problem}" for problem in exc.problems)
        raise _fail(f"Checks failed, nothing was saved:\n{problems}") from exc
    except (ops.TenantsError, SecretKeyError) as exc:
        raise _fail(str(exc)) from exc


def _vault() -> Vault:
    return Vault.from_settings(get_settings())


def _upstreams(timeout: float | None = None) -> ops.Upstreams:
    return ops.Upstreams.from_settings(get_settings(), timeout=timeout)


@contextmanager
def _checking() -> Iterator[None]:
    with stderr.status("Checking with Apex and Flourish, then saving..."):
        yield


def parse_interval(text: str) -> int:
    """Return the seconds in ``text`` such as "900", "30m", "4h" or "1d"."""
    match = _INTERVAL.match(text)
    if match is None:
        raise typer.BadParameter(
            f"Invalid interval {text!r}: give seconds or a number with s, m, h or d, "
            "such as 4h."
        )
    return int(match.group(1)) * _INTERVAL_UNITS[match.group(2).lower()]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"Cannot encode {type(value).__name__} as JSON")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=_json_default, indent=2))


def _utc(moment: datetime) -> datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime | None) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


# Views (never a credential) --------------------------------------------------


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    """Describe a tenant for display, without its Apex token."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "final_order_stages": list(tenant.final_order_stages),
        "grams_per_pound": tenant.grams_per_pound,
        "auto_push_orders": tenant.auto_push_orders,
        "quantity_mode": tenant.quantity_mode,
        "apex_state": tenant.apex_state,
        "apex_state_reason": tenant.apex_state_reason,
        "facilities": len(tenant.facilities),
        "created_at": tenant.created_at,
    }


def facility_view(facility: Facility) -> dict[str, Any]:
    """Describe a facility for display, without its Flourish API key."""
    return {
        "id": facility.id,
        "tenant_id": facility.tenant_id,
        "tenant": facility.tenant.name,
        "name": facility.name,
        "flourish_facility_id": facility.flourish_facility_id,
        "wholesale_room": facility.wholesale_room,
        "apex_operation_id": facility.apex_operation_id,
        "sync_interval_seconds": facility.sync_interval_seconds,
        "next_sync_at": facility.next_sync_at,
        "state": facility.state,
        "state_reason": facility.state_reason,
    }


def _show(view: dict[str, Any], json_output: bool) -> None:
    if json_output:
        _print_json(view)
        return
    rows = [(key, _cell(value)) for key, value in view.items()]
    stdout.print(_table("", ("Field", "Value"), rows))


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "-" if value is None else str(value)


# Tenants ---------------------------------------------------------------------


@tenants_app.command("add")
def add_tenant(
    name: str = typer.Argument(..., help="Company name, unique across tenants."),
    apex_token: str = typer.Option(
        ...,
        "--apex-token",
        prompt="Apex API token",
        hide_input=True,
        envvar="APEXSYNC_APEX_TOKEN",
        show_envvar=True,
        help="Apex API token; asked for with hidden input when not given.",
    ),
    final_stage: list[str] | None = typer.Option(
        None,
        "--final-stage",
        help="Apex parent stage in which an order is final and may be pushed; "
        "repeat for several. Default: Accepted and Pending Shipment.",
    ),
    grams_per_pound: str | None = typer.Option(
        None, "--grams-per-pound", help="Grams in one pound. Default: 453.59237."
    ),
    auto_push: bool = typer.Option(
        False, "--auto-push/--no-auto-push", help="Push final Apex orders by polling."
    ),
    quantity_mode: str = typer.Option(
        "create_only",
        "--quantity-mode",
        help="create_only: never overwrite a batch once created. "
        "(track, which keeps Apex quantities equal to Flourish's, is not built yet.)",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check an Apex token and add a tenant (a company) with it."""
    changes = ops.TenantChanges(
        name=name,
        apex_token=apex_token,
        final_order_stages=final_stage or None,
        grams_per_pound=grams_per_pound,
        auto_push_orders=auto_push,
        quantity_mode=quantity_mode,
    )
    with _operation() as session, _checking():
        tenant = ops.add_tenant(session, _vault(), _upstreams(), changes)
        view = tenant_view(tenant)

    _report_saved(
        f"Tenant {view['name']!r} added with id {view['id']}.", view, json_output
    )


@tenants_app.command("list")
def list_tenants(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the tenants."""
    with _operation() as session:
        views = [tenant_view(tenant) for tenant in ops.list_tenants(session)]

    if json_output:
        _print_json(views)
        return
    columns = (
        "Id",
        "Name",
        "Apex",
        "Final stages",
        "Quantity mode",
        "Auto push",
        "Facilities",
    )
    rows = [
        (
            v["id"],
            v["name"],
            v["apex_state"],
            _cell(v["final_order_stages"]),
            v["quantity_mode"],
            "yes" if v["auto_push_orders"] else "no",
            v["facilities"],
        )
        for v in views
    ]
    stdout.print(_table("Tenants", columns, rows))


@tenants_app.command("show")
def show_tenant(
    tenant: str = typer.Argument(..., help=TENANT_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one tenant's settings (never its token)."""
    with _operation() as session:
        view = tenant_view(ops.find_tenant(session, tenant))
    _show(view, json_output)


@tenants_app.command("update")
def update_tenant(
    tenant: str = typer.Argument(..., help=TENANT_HELP),
    name: str | None = typer.Option(None, "--name", help="New company name."),
    apex_token: str | None = typer.Option(
        None, "--apex-token", help="New Apex API token (prefer --ask-apex-token)."
    ),
    ask_apex_token: bool = typer.Option(
        False, "--ask-apex-token", help="Ask for a new Apex token with hidden input."
    ),
    final_stage: list[str] | None = typer.Option(
        None, "--final-stage", help="Final Apex parent stage; repeat for several."
    ),
    grams_per_pound: str | None = typer.Option(
        None, "--grams-per-pound", help="Grams in one pound."
    ),
    auto_push: bool | None = typer.Option(
        None, "--auto-push/--no-auto-push", help="Push final Apex orders by polling."
    ),
    quantity_mode: str | None = typer.Option(
        None, "--quantity-mode", help="create_only or track."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Change a tenant's settings; a new token is checked before it is saved."""
    if ask_apex_token:
        apex_token = typer.prompt("New Apex API token", hide_input=True)
    changes = ops.TenantChanges(
        name=name,
        apex_token=apex_token,
        final_order_stages=final_stage or None,
        grams_per_pound=grams_per_pound,
        auto_push_orders=auto_push,
        quantity_mode=quantity_mode,
    )
    if changes == ops.TenantChanges():
        raise _fail("Nothing to change: give at least one option (see --help).")

    with _operation() as session, _checking():
        record = ops.find_tenant(session, tenant)
        view = tenant_view(
            ops.update_tenant(session, _vault(), _upstreams(), record, changes)
        )

    _report_saved(f"Tenant {view['name']!r} updated.", view, json_output)


def _report_saved(message: str, view: dict[str, Any], json_output: bool) -> None:
    if json_output:
        _print_json(view)
    else:
        stdout.print(message, markup=False, highlight=False)


# Facilities ------------------------------------------------------------------


def _find_facility(session: Session, facility: str, tenant: str | None) -> Facility:
    owner = ops.find_tenant(session, tenant) if tenant else None
    return ops.find_facility(session, facility, owner)


@facilities_app.command("add")
def add_facility(
    tenant: str = typer.Argument(..., help=TENANT_HELP),
    name: str = typer.Argument(..., help="Facility name, unique within the tenant."),
    flourish_facility_id: str = typer.Option(
        ..., "--flourish-facility-id", help="Flourish facility id (its FacilityID)."
    ),
    wholesale_room: str = typer.Option(
        ...,
        "--wholesale-room",
        help="Flourish room whose packages are offered on Apex.",
    ),
    apex_operation_id: int = typer.Option(
        ..., "--apex-operation-id", help="Apex operation (licensed location) id."
    ),
    interval: str = typer.Option("4h", "--interval", help=INTERVAL_HELP),
    flourish_api_key: str = typer.Option(
        ...,
        "--flourish-api-key",
        prompt="Flourish API key",
        hide_input=True,
        envvar="APEXSYNC_FLOURISH_API_KEY",
        show_envvar=True,
        help="Flourish external API key; asked for with hidden input when not given.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check and add a facility: Flourish key, facility, room and Apex operation."""
    changes = ops.FacilityChanges(
        name=name,
        flourish_api_key=flourish_api_key,
        flourish_facility_id=flourish_facility_id,
        wholesale_room=wholesale_room,
        apex_operation_id=apex_operation_id,
        sync_interval_seconds=parse_interval(interval),
    )
    with _operation() as session, _checking():
        owner = ops.find_tenant(session, tenant)
        facility = ops.add_facility(session, _vault(), _upstreams(), owner, changes)
        view = facility_view(facility)

    message = (
        f"Facility {view['name']!r} added with id {view['id']}; first sync due now."
    )
    _report_saved(message, view, json_output)


@facilities_app.command("list")
def list_facilities(
    tenant: str | None = typer.Option(None, "--tenant", help=ONLY_TENANT_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the facilities, of every tenant or of one."""
    with _operation() as session:
        owner = ops.find_tenant(session, tenant) if tenant else None
        views = [facility_view(item) for item in ops.list_facilities(session, owner)]

    if json_output:
        _print_json(views)
        return
    columns = (
        "Id",
        "Tenant",
        "Name",
        "Flourish id",
        "Room",
        "Operation",
        "Every",
        "State",
    )
    rows = [
        (
            v["id"],
            v["tenant"],
            v["name"],
            v["flourish_facility_id"],
            v["wholesale_room"],
            v["apex_operation_id"],
            _duration(v["sync_interval_seconds"]),
            v["state"],
        )
        for v in views
    ]
    stdout.print(_table("Facilities", columns, rows))


@facilities_app.command("show")
def show_facility(
    facility: str = typer.Argument(..., help=FACILITY_HELP),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one facility's settings (never its key)."""
    with _operation() as session:
        view = facility_view(_find_facility(session, facility, tenant))
    _show(view, json_output)


@facilities_app.command("update")
def update_facility(
    facility: str = typer.Argument(..., help=FACILITY_HELP),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    name: str | None = typer.Option(None, "--name", help="New facility name."),
    flourish_facility_id: str | None = typer.Option(
        None, "--flourish-facility-id", help="New Flourish facility id."
    ),
    wholesale_room: str | None = typer.Option(
        None, "--wholesale-room", help="New Flourish room."
    ),
    apex_operation_id: int | None = typer.Option(
        None, "--apex-operation-id", help="New Apex operation id."
    ),
    interval: str | None = typer.Option(None, "--interval", help=INTERVAL_HELP),
    flourish_api_key: str | None = typer.Option(
        None,
        "--flourish-api-key",
        help="New Flourish API key (prefer --ask-flourish-api-key).",
    ),
    ask_flourish_api_key: bool = typer.Option(
        False,
        "--ask-flourish-api-key",
        help="Ask for a new Flourish key with hidden input.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Change a facility; new upstream settings are checked before they are saved."""
    if ask_flourish_api_key:
        flourish_api_key = typer.prompt("New Flourish API key", hide_input=True)
    changes = ops.FacilityChanges(
        name=name,
        flourish_api_key=flourish_api_key,
        flourish_facility_id=flourish_facility_id,
        wholesale_room=wholesale_room,
        apex_operation_id=apex_operation_id,
        sync_interval_seconds=parse_interval(interval) if interval else None,
    )
    if changes == ops.FacilityChanges():
        raise _fail("Nothing to change: give at least one option (see --help).")

    with _operation() as session, _checking():
        record = _find_facility(session, facility, tenant)
        updated = ops.update_facility(session, _vault(), _upstreams(), record, changes)
        view = facility_view(updated)

    _report_saved(f"Facility {view['name']!r} updated.", view, json_output)


@facilities_app.command("pause")
def pause_facility(
    facility: str = typer.Argument(..., help=FACILITY_HELP),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
    reason: str | None = typer.Option(None, "--reason", help="Why, shown by status."),
) -> None:
    """Stop scheduled syncs of a facility until it is resumed."""
    with _operation() as session:
        record = _find_facility(session, facility, tenant)
        ops.pause_facility(session, record, reason)
        label = record.name

    stdout.print(f"Facility {label!r} paused.", markup=False, highlight=False)


@facilities_app.command("resume")
def resume_facility(
    facility: str = typer.Argument(..., help=FACILITY_HELP),
    tenant: str | None = typer.Option(None, "--tenant", help=TENANT_HELP),
) -> None:
    """Let scheduled syncs run again; rejected credentials are checked first."""
    with _operation() as session, _checking():
        record = _find_facility(session, facility, tenant)
        ops.resume_facility(session, _vault(), _upstreams(), record)
        label = record.name

    stdout.print(f"Facility {label!r} resumed.", markup=False, highlight=False)


# Secrets ---------------------------------------------------------------------


@secrets_app.command("generate-key")
def generate_key_command() -> None:
    """Print a new Fernet key for APEXSYNC_SECRET_KEY."""
    typer.echo(generate_key())
    stderr.print(
        "Put it first in APEXSYNC_SECRET_KEY (comma separated, newest first), "
        "then run `apexsync secrets rotate`.",
        markup=False,
        highlight=False,
    )


@secrets_app.command("rotate")
def rotate_command(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-encrypt every stored credential with the first key of APEXSYNC_SECRET_KEY."""
    with _operation() as session:
        report = ops.rotate_secrets(session, _vault())

    if json_output:
        _print_json(dataclasses.asdict(report))
        return
    stdout.print(
        f"Re-encrypted {report.tenants} Apex tokens and {report.facilities} Flourish "
        "keys. Older keys can now leave APEXSYNC_SECRET_KEY.",
        markup=False,
        highlight=False,
    )


# Status ----------------------------------------------------------------------


def status_command(
    tenant: str | None = typer.Option(None, "--tenant", help=ONLY_TENANT_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show last and next syncs, run counts, unmapped SKUs and open dead letters."""
    with _operation() as session:
        owner = ops.find_tenant(session, tenant) if tenant else None
        statuses = ops.collect_status(
            session,
            vault=_vault_or_none(),
            upstreams=_upstreams(STATUS_HTTP_TIMEOUT),
            tenant=owner,
        )

    if json_output:
        _print_json([dataclasses.asdict(item) for item in statuses])
        return
    if not statuses:
        stdout.print(
            "No tenants yet: add one with `apexsync tenants add`.", markup=False
        )
    for item in statuses:
        _print_tenant_status(item)


def _vault_or_none() -> Vault | None:
    # Status still shows the database side when no key is configured.
    try:
        return _vault()
    except SecretKeyError:
        return None


def _print_tenant_status(item: ops.TenantStatus) -> None:
    apex = item.apex_state + (
        f" ({item.apex_state_reason})" if item.apex_state_reason else ""
    )
    stdout.print(
        f"{item.name} (tenant {item.id}): Apex {apex}; "
        f"credits {_credits(item.credits)}; "
        f"open dead letters {item.open_dead_letters}",
        markup=False,
        highlight=False,
    )
    columns = (
        "Facility",
        "State",
        "Last sync",
        "Next sync",
        "Last run",
        "Unmapped SKUs",
        "Dead letters",
    )
    rows = [_facility_row(facility) for facility in item.facilities]
    stdout.print(_table("", columns, rows))


def _credits(credits: ops.CreditsStatus) -> str:
    if credits.error:
        return f"unknown ({credits.error})"
    limit = "unlimited" if credits.monthly_limit is None else credits.monthly_limit
    return f"{credits.used} of {limit} in {credits.month}"


def _facility_row(facility: ops.FacilityStatus) -> tuple[str, ...]:
    state = facility.state
    if facility.active_run_id:
        state += f", run {facility.active_run_id} in progress"
    return (
        f"{facility.name} ({facility.id})",
        state,
        _when(facility.last_sync_at),
        _when(facility.next_sync_at) if facility.state == "active" else "-",
        _run_counts(facility.last_run),
        _skus(facility.unmapped_skus),
        str(facility.open_dead_letters),
    )


def _run_counts(run: ops.RunSummary | None) -> str:
    if run is None:
        return "none yet"
    return (
        f"#{run.id} {run.state}: fetched {run.fetched}, created {run.created}, "
        f"updated {run.updated}, skipped {run.skipped}, unmapped {run.unmapped}, "
        f"failed {run.failed}"
    )


def _skus(skus: list[str], shown: int = 5) -> str:
    if len(skus) <= shown:
        return ", ".join(skus) or "-"
    return ", ".join(skus[:shown]) + f" and {len(skus) - shown} more"
