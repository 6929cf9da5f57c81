"""``apexsync buyers``: list buyer links, run matching, link and unlink by hand."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from shared import buyers
from shared.db import session_scope
from shared.models import BuyerLink, Facility, Tenant
from workers.cli_orders import fail, resolve_tenant

buyers_app = typer.Typer(
    help="Apex buyers and the Flourish destinations they are linked to.",
    no_args_is_help=True,
)
console = Console()

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.")
]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", help="Tenant id or name (needed when there are several)."),
]


def buyer_row(link: BuyerLink) -> dict[str, Any]:
    return {
        "tenant_id": link.tenant_id,
        "apex_buyer_id": link.apex_buyer_id,
        "buyer_name": link.buyer_name,
        "license_number": link.license_number,
        "address": link.address,
        "flourish_destination_id": link.flourish_destination_id,
        "source": link.source,
        "state": link.state,
        "reason": link.reason,
        "candidates": link.candidates or [],
    }


@buyers_app.command("list")
def buyers_list(
    tenant: TenantOption = None,
    state: str | None = typer.Option(
        None, help="Only this state: linked, review, unmatched or unlinked."
    ),
    as_json: JsonOption = False,
) -> None:
    """List buyers with their destination, or their candidates when in review."""
    if state is not None and state not in buyers.BUYER_LINK_STATES:
        known = ", ".join(buyers.BUYER_LINK_STATES)
        raise fail(f"Unknown state {state!r}: use one of {known}.")

    with session_scope() as session:
        statement = select(BuyerLink).order_by(
            BuyerLink.tenant_id, BuyerLink.buyer_name
        )
        if tenant is not None:
            statement = statement.where(
                BuyerLink.tenant_id == resolve_tenant(session, tenant).id
            )
        if state is not None:
            statement = statement.where(BuyerLink.state == state)
        rows = [buyer_row(link) for link in session.scalars(statement)]

    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Buyers")
    for column in (
        "tenant",
        "buyer",
        "name",
        "license",
        "destination",
        "source",
        "state",
        "reason",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["tenant_id"]),
            str(row["apex_buyer_id"]),
            row["buyer_name"],
            row["license_number"] or "-",
            row["flourish_destination_id"] or "-",
            row["source"],
            row["state"],
            _reason_with_candidates(row),
        )
    console.print(table)


def _reason_with_candidates(row: dict[str, Any]) -> str:
    reason = row["reason"] or ""
    if row["state"] != buyers.REVIEW:
        return reason
    names = [f"{c['destination_id']} ({c['name']})" for c in row["candidates"]]
    return f"{reason} Candidates: {', '.join(names)}"


@buyers_app.command("match")
def buyers_match(
    tenant: TenantOption = None,
    full: bool = typer.Option(
        False,
        "--full",
        help="Read every buyer, not only those changed since the last run.",
    ),
    as_json: JsonOption = False,
) -> None:
    """Match Apex buyers to Flourish destinations by license number and address.

    Links made or removed by hand are kept. Runs here, not on a worker.
    """
    from tasks.orders import match_buyers

    with session_scope() as session:
        tenant_ids = (
            [resolve_tenant(session, tenant).id] if tenant else _all_tenant_ids(session)
        )

    results = {}
    for tenant_id in tenant_ids:
        results[tenant_id] = match_buyers.run(tenant_id=tenant_id, full=full)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for tenant_id, counts in results.items():
        summary = ", ".join(
            f"{state} {count}" for state, count in sorted(counts.items())
        )
        console.print(f"Tenant {tenant_id}: {summary or 'no buyers changed'}")


def _all_tenant_ids(session: Any) -> list[int]:
    return list(session.scalars(select(Tenant.id).order_by(Tenant.id)))


@buyers_app.command("link")
def buyers_link(
    buyer: int = typer.Argument(..., help="Apex buyer id."),
    destination: str = typer.Argument(..., help="Flourish destination id."),
    tenant: TenantOption = None,
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Check that the destination exists in Flourish.",
    ),
) -> None:
    """Link a buyer to a destination by hand; matching never changes this link."""
    with session_scope() as session:
        owner = resolve_tenant(session, tenant)
        name = _destination_name(session, owner, destination) if check else None
        buyers.link_buyer(session, owner.id, buyer, destination)
    label = f"{destination} ({name})" if name else destination
    console.print(f"Buyer {buyer} linked to destination {label}.")


def _destination_name(session: Any, tenant: Tenant, destination_id: str) -> str | None:
    """Return the destination's name, or fail when Flourish does not list it."""
    from tasks.base import flourish_client_for

    facility = session.scalars(
        select(Facility).where(Facility.tenant_id == tenant.id).order_by(Facility.id)
    ).first()
    if facility is None:
        raise fail(f"Tenant {tenant.name!r} has no facility to read destinations with.")
    with flourish_client_for(facility) as flourish:
        found = [
            item
            for item in flourish.list_destinations()
            if str(item.id) == destination_id
        ]
    if not found:
        raise fail(
            f"Flourish has no destination {destination_id!r}. Check the id, or pass "
            "--no-check to link it anyway."
        )
    return found[0].name


@buyers_app.command("unlink")
def buyers_unlink(
    buyer: int = typer.Argument(..., help="Apex buyer id."),
    tenant: TenantOption = None,
) -> None:
    """Remove a buyer's link by hand; matching does not link it again until reset."""
    with session_scope() as session:
        owner = resolve_tenant(session, tenant)
        buyers.unlink_buyer(session, owner.id, buyer)
    console.print(
        f"Buyer {buyer} unlinked; its orders are not pushed until it is linked."
    )


@buyers_app.command("reset")
def buyers_reset(
    buyer: int = typer.Argument(..., help="Apex buyer id."),
    tenant: TenantOption = None,
) -> None:
    """Hand a buyer back to automatic matching (undo link or unlink by hand)."""
    with session_scope() as session:
        owner = resolve_tenant(session, tenant)
        if buyers.reset_buyer(session, owner.id, buyer) is None:
            raise fail(f"Buyer {buyer} has no link to reset.")
    console.print(f"Buyer {buyer} is matched automatically again from the next run.")
