"""Database models. Every row that belongs to a company carries ``tenant_id``.

Credentials are stored as Fernet ciphertext (see ``shared.secrets``); the
columns are named ``*_encrypted`` so no caller mistakes them for plain text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.settings import GRAMS_PER_POUND

DEFAULT_FINAL_ORDER_STAGES = ["Accepted", "Pending Shipment"]
DEFAULT_PACKAGE_STATUSES = ["Created"]
#: Four hours, the interval operators know from the native integration.
DEFAULT_SYNC_INTERVAL_SECONDS = 4 * 60 * 60

#: States of a sync run or an order push that still has work to do.
ACTIVE_RUN_STATES = ("queued", "running")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        Decimal: Numeric(20, 6),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Tenant(Base):
    """A company: one Apex token, any number of Flourish facilities."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    apex_token_encrypted: Mapped[str] = mapped_column(Text)
    grams_per_pound: Mapped[Decimal] = mapped_column(
        Numeric(12, 6), default=GRAMS_PER_POUND
    )
    final_order_stages: Mapped[list[Any]] = mapped_column(
        JSON, default=lambda: list(DEFAULT_FINAL_ORDER_STAGES)
    )
    auto_push_orders: Mapped[bool] = mapped_column(Boolean, default=False)
    #: "create_only" never overwrites a batch; "track" keeps Apex quantity
    #: equal to Flourish available minus open Apex orders.
    quantity_mode: Mapped[str] = mapped_column(String(20), default="create_only")
    order_poll_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    orders_cursor: Mapped[datetime | None] = mapped_column(nullable=True)
    next_order_poll_at: Mapped[datetime | None] = mapped_column(nullable=True)
    products_cursor: Mapped[datetime | None] = mapped_column(nullable=True)
    buyers_cursor: Mapped[datetime | None] = mapped_column(nullable=True)
    #: "active", "paused" (credits spent) or "credentials_rejected".
    apex_state: Mapped[str] = mapped_column(String(30), default="active")
    apex_state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    apex_paused_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    facilities: Mapped[list[Facility]] = relationship(back_populates="tenant")


class Facility(Base):
    """A licensed Flourish facility synced into one Apex operation."""

    __tablename__ = "facilities"
    __table_args__ = (UniqueConstraint("tenant_id", "flourish_facility_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    flourish_facility_id: Mapped[str] = mapped_column(String(100))
    flourish_api_key_encrypted: Mapped[str] = mapped_column(Text)
    wholesale_room: Mapped[str] = mapped_column(String(200))
    apex_operation_id: Mapped[int] = mapped_column(BigInteger)
    package_statuses: Mapped[list[Any]] = mapped_column(
        JSON, default=lambda: list(DEFAULT_PACKAGE_STATUSES)
    )
    sync_interval_seconds: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_SYNC_INTERVAL_SECONDS
    )
    next_sync_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: Flourish ``last_updated_timestamp_start`` of the next incremental sync.
    cursor: Mapped[datetime | None] = mapped_column(nullable=True)
    #: "active", "paused" (by an operator) or "credentials_rejected".
    state: Mapped[str] = mapped_column(String(30), default="active")
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tenant: Mapped[Tenant] = relationship(back_populates="facilities")


class ApexProduct(Base):
    """A cached Apex product: the link from a Flourish SKU to ``product_sku``."""

    __tablename__ = "apex_products"
    __table_args__ = (
        UniqueConstraint("tenant_id", "apex_product_id"),
        Index("ix_apex_products_tenant_sku", "tenant_id", "sku"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    apex_product_id: Mapped[int] = mapped_column(BigInteger)
    sku: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str] = mapped_column(String(255))
    unit_measurement_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Apex unit name of the product's base unit ("Pound", "Gram", "Unit").
    unit_name: Mapped[str | None] = mapped_column(String(50), nullable=True)
    predominate_cannabinoid_id: Mapped[int | None] = mapped_column(
        Integer, nullable=True
    )
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    apex_updated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApexTaxonomy(Base):
    """A cached Apex lookup row: unit measurement, cannabinoid or terpene."""

    __tablename__ = "apex_taxonomy"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "apex_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    #: "unit_measurement", "cannabinoid" or "terpene".
    kind: Mapped[str] = mapped_column(String(30))
    apex_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str | None] = mapped_column(String(100), nullable=True)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchLink(Base):
    """One Flourish package and the Apex batch made from it.

    The row is written as an intent (``apex_batch_id`` empty) before the POST,
    so a retry looks the batch up in Apex before creating another.
    """

    __tablename__ = "batch_links"
    __table_args__ = (UniqueConstraint("facility_id", "package_tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    package_tag: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(255))
    apex_product_id: Mapped[int] = mapped_column(BigInteger)
    apex_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: "intent" until Apex confirms, then "created".
    state: Mapped[str] = mapped_column(String(20), default="intent")
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(20, 6), nullable=True)
    unit_name: Mapped[str | None] = mapped_column(String(50), nullable=True)
    flourish_item_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    flourish_uom: Mapped[str | None] = mapped_column(String(20), nullable=True)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    intent_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PendingPackage(Base):
    """A package left out of a sync that a later sync must read again.

    Unmapped SKUs land here; once the product appears in Apex, the next sync
    fetches these packages by tag even though Flourish did not change them.
    """

    __tablename__ = "pending_packages"
    __table_args__ = (UniqueConstraint("facility_id", "package_tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    package_tag: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncRun(Base):
    """One inventory sync of one facility, with its counts."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        # At most one unfinished run per facility: two syncs never overlap.
        Index(
            "uq_sync_runs_one_active_per_facility",
            "facility_id",
            unique=True,
            sqlite_where=text("state IN ('queued', 'running')"),
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    #: "schedule", "manual", "demo" or "replay".
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    #: "queued", "running", "succeeded", "failed" or "cancelled".
    state: Mapped[str] = mapped_column(String(20), default="queued")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: Flourish cursor this run reads from (None: a full read).
    cursor_from: Mapped[datetime | None] = mapped_column(nullable=True)
    #: "delta" (packages changed since the cursor), "pending" (packages left
    #: over by earlier runs) or "done". With ``next_offset`` it names the next
    #: page still to process.
    phase: Mapped[str] = mapped_column(String(10), default="delta")
    #: Offset of the next Flourish page still to process.
    next_offset: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    unmapped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    apex_requests: Mapped[int] = mapped_column(Integer, default=0)
    flourish_requests: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    outcomes: Mapped[list[PackageOutcome]] = relationship(back_populates="run")


class PackageOutcome(Base):
    """The outcome of one package in one sync run."""

    __tablename__ = "package_outcomes"
    __table_args__ = (UniqueConstraint("run_id", "package_tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    package_tag: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: "created", "updated", "exists", "skipped", "unmapped" or "failed".
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    apex_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[SyncRun] = relationship(back_populates="outcomes")


class BuyerLink(Base):
    """An Apex buyer and the Flourish destination it is matched to."""

    __tablename__ = "buyer_links"
    __table_args__ = (UniqueConstraint("tenant_id", "apex_buyer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    apex_buyer_id: Mapped[int] = mapped_column(BigInteger)
    buyer_name: Mapped[str] = mapped_column(String(255))
    license_number: Mapped[str | None] = mapped_column(String(100), nullable=True)
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    flourish_destination_id: Mapped[str | None] = mapped_column(
        String(100), nullable=True
    )
    #: "auto" (matched by license and address) or "manual" (set by an operator).
    source: Mapped[str] = mapped_column(String(10), default="auto")
    #: "linked", "review" (candidates need a person) or "unmatched".
    state: Mapped[str] = mapped_column(String(20), default="unmatched")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    candidates: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrderLink(Base):
    """An Apex shipping order and the Flourish outbound order made from it.

    Written as an intent before the POST; ``fingerprint`` is a hash of what
    was last sent, so pushing an unchanged order is a no-op.
    """

    __tablename__ = "order_links"
    __table_args__ = (UniqueConstraint("tenant_id", "apex_order_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    facility_id: Mapped[int | None] = mapped_column(
        ForeignKey("facilities.id"), nullable=True
    )
    apex_order_id: Mapped[int] = mapped_column(BigInteger)
    invoice_number: Mapped[str | None] = mapped_column(String(100), nullable=True)
    flourish_order_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: "intent", "pushed", "cancelled", "refused" or "failed".
    state: Mapped[str] = mapped_column(String(20), default="intent")
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pushed_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    intent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    pushed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrderPush(Base):
    """One attempt to push one Apex order, from a person or the poller."""

    __tablename__ = "order_pushes"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    apex_order_id: Mapped[int] = mapped_column(BigInteger, index=True)
    #: "manual", "poll", "demo" or "replay".
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    #: "queued", "running", "created", "updated", "unchanged", "cancelled",
    #: "refused" or "failed".
    state: Mapped[str] = mapped_column(String(20), default="queued")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    flourish_order_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(nullable=True)
    enqueued_count: Mapped[int] = mapped_column(Integer, default=0)


class DeadLetter(Base):
    """A task that failed for good, kept with enough context to replay it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    #: Celery keeps one id across a task's retries, so this is unique.
    task_id: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    #: Keyword arguments of the task: ids only, never credentials.
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tenant_id: Mapped[int | None] = mapped_column(
        ForeignKey("tenants.id"), nullable=True, index=True
    )
    facility_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exception_type: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    upstream_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: "open", "replayed", "resolved" or "discarded".
    state: Mapped[str] = mapped_column(String(20), default="open", index=True)
    replay_task_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    replayed_at: Mapped[datetime | None] = mapped_column(nullable=True)
