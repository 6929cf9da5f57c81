"""Per-tenant caches of Apex products and taxonomies (units, cannabinoids, terpenes).

Apex ids of units, cannabinoids and terpenes differ between accounts, so they
are looked up per tenant and never hard-coded. Products are read
incrementally with ``updated_at_from``; the cursor moves only after a complete
read, to the read's start minus an overlap.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.apex.client import ApexClient
from shared.models import ApexProduct, ApexTaxonomy, Tenant, utcnow

logger = logging.getLogger(__name__)

#: Taxonomies change rarely; a day keeps an unchanged sync to a few requests.
TAXONOMY_MAX_AGE = timedelta(hours=24)
#: Apex advises seeding the first incremental read with an early date.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: Other spellings of Flourish's cannabinoid keys: Apex names a cannabinoid in
#: full ("Cannabidiol") and abbreviates it ("CBD", "D9-THC").
CANNABINOID_ALIASES: dict[str, tuple[str, ...]] = {
    "thc": ("tetrahydrocannabinol",),
    "thca": ("tetrahydrocannabinolic acid",),
    "thcv": ("tetrahydrocannabivarin",),
    "delta_8_thc": ("d8-thc", "delta-8 thc", "delta-8 tetrahydrocannabinol"),
    "delta_9_thc": ("d9-thc", "delta-9 thc", "delta-9 tetrahydrocannabinol"),
    "cbd": ("cannabidiol",),
    "cbda": ("cannabidiolic acid",),
    "cbdv": ("cannabidivarin",),
    "cbg": ("cannabigerol",),
    "cbn": ("cannabinol",),
    "tac": ("total active cannabinoids", "total cannabinoids"),
}


def normalise_name(name: str) -> str:
    """Fold a cannabinoid or terpene name for matching ("Beta-Caryophyllene")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass
class Taxonomy:
    """A tenant's Apex lookup ids by normalised name."""

    cannabinoids: dict[str, int] = field(default_factory=dict)
    terpenes: dict[str, int] = field(default_factory=dict)
    units: dict[int, str] = field(default_factory=dict)

    def cannabinoid_id(self, name: str) -> int | None:
        """Find the Apex id of a Flourish cannabinoid name such as ``delta_9_thc``."""
        for candidate in (name, *CANNABINOID_ALIASES.get(name, ())):
            found = self.cannabinoids.get(normalise_name(candidate))
            if found is not None:
                return found
        return None

    def terpene_id(self, name: str) -> int | None:
        return self.terpenes.get(normalise_name(name))


def load_taxonomy(session: Session, tenant_id: int) -> Taxonomy:
    """Read the cached taxonomy of ``tenant_id`` from the database."""
    taxonomy = Taxonomy()
    rows = session.scalars(
        select(ApexTaxonomy).where(ApexTaxonomy.tenant_id == tenant_id)
    )
    for row in rows:
        if row.kind == "unit_measurement":
            taxonomy.units[row.apex_id] = row.name
            continue
        target = (
            taxonomy.cannabinoids if row.kind == "cannabinoid" else taxonomy.terpenes
        )
        for label in (row.name, row.alias):
            if label:
                target.setdefault(normalise_name(label), row.apex_id)
    return taxonomy


def taxonomy_is_fresh(session: Session, tenant_id: int, now: datetime) -> bool:
    oldest = session.scalars(
        select(ApexTaxonomy.fetched_at)
        .where(ApexTaxonomy.tenant_id == tenant_id)
        .order_by(ApexTaxonomy.fetched_at)
        .limit(1)
    ).first()
    return oldest is not None and _aware(oldest) > now - TAXONOMY_MAX_AGE


def refresh_taxonomy(session: Session, tenant: Tenant, apex: ApexClient) -> None:
    """Replace the tenant's cached units, cannabinoids and terpenes from Apex."""
    rows: list[tuple[str, int, str, str | None]] = []
    for unit in apex.list_unit_measurements():
        rows.append(("unit_measurement", unit.id, unit.name, unit.alias))
    for cannabinoid in apex.list_cannabinoids():
        rows.append(
            (
                "cannabinoid",
                cannabinoid.id,
                cannabinoid.name,
                _abbreviation(cannabinoid),
            )
        )
    for terpene in apex.list_terpenes():
        rows.append(("terpene", terpene.id, terpene.name, None))

    # Upsert, then delete what Apex no longer lists: two runs of one tenant
    # may refresh at the same moment, and a delete-then-insert of both would
    # collide on the unique key.
    now = utcnow()
    for kind, apex_id, name, alias in rows:
        _upsert_taxonomy(session, tenant.id, kind, apex_id, name, alias, now)
    for kind in ("unit_measurement", "cannabinoid", "terpene"):
        keep = [apex_id for row_kind, apex_id, _, _ in rows if row_kind == kind]
        session.execute(
            delete(ApexTaxonomy)
            .where(ApexTaxonomy.tenant_id == tenant.id)
            .where(ApexTaxonomy.kind == kind)
            .where(ApexTaxonomy.apex_id.not_in(keep))
        )
    session.flush()
    logger.info("tenant=%s taxonomy refreshed: %d rows", tenant.id, len(rows))


def refresh_products(
    session: Session, tenant: Tenant, apex: ApexClient, overlap: timedelta
) -> int:
    """Upsert products changed since the tenant's cursor; return how many."""
    started = utcnow()
    since = _aware(tenant.products_cursor) if tenant.products_cursor else EPOCH
    units = load_taxonomy(session, tenant.id).units
    count = 0
    for product in apex.iter_products(since):
        _upsert_product(session, tenant.id, _product_values(product, units))
        count += 1
    tenant.products_cursor = started - overlap
    session.flush()
    if count:
        logger.info("tenant=%s products refreshed: %d changed", tenant.id, count)
    return count


def products_by_sku(
    session: Session, tenant_id: int, skus: set[str]
) -> dict[str, ApexProduct]:
    """Map each SKU to its Apex product; SKUs match exactly, archived ones do not."""
    if not skus:
        return {}
    rows = session.scalars(
        select(ApexProduct)
        .where(ApexProduct.tenant_id == tenant_id)
        .where(ApexProduct.sku.in_(skus))
        .where(ApexProduct.archived.is_(False))
        .order_by(ApexProduct.apex_product_id)
    )
    found: dict[str, ApexProduct] = {}
    for row in rows:
        if row.sku is not None:
            found.setdefault(row.sku, row)
    return found


def _product_values(product: Any, units: dict[int, str]) -> dict[str, Any]:
    unit_id = getattr(product, "product_unit_measurement_id", None)
    nested = getattr(product, "unit_measurement", None)
    unit_name = getattr(nested, "name", None) or units.get(unit_id or -1)
    sku = getattr(product, "product_sku", None)
    return {
        "apex_product_id": product.id,
        "sku": sku.strip() if isinstance(sku, str) and sku.strip() else None,
        "name": product.name,
        "unit_measurement_id": unit_id,
        "unit_name": unit_name,
        "predominate_cannabinoid_id": getattr(
            product, "predominate_canabinoid_id", None
        ),
        "archived": bool(getattr(product, "archived", False)),
        "apex_updated_at": getattr(product, "updated_at", None),
        "fetched_at": utcnow(),
    }


def _upsert_product(session: Session, tenant_id: int, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(ApexProduct).values(tenant_id=tenant_id, **values)
    changes = {
        key: statement.excluded[key] for key in values if key != "apex_product_id"
    }
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "apex_product_id"], set_=changes
        )
    )


def _upsert_taxonomy(
    session: Session,
    tenant_id: int,
    kind: str,
    apex_id: int,
    name: str,
    alias: str | None,
    now: datetime,
) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {"name": name, "alias": alias, "fetched_at": now}
    statement = insert(ApexTaxonomy).values(
        tenant_id=tenant_id, kind=kind, apex_id=apex_id, **values
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id", "kind", "apex_id"], set_=values
        )
    )


def _abbreviation(cannabinoid: Any) -> str | None:
    return getattr(cannabinoid, "abbreviation", None) or getattr(
        cannabinoid, "display_name", None
    )


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
