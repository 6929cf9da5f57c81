"""Tenants and facilities: onboarding checks, changes, key rotation and status.

Nothing here prints or prompts, because ``workers.cli_tenants`` is the
command line on top of it. Every add or update that touches a credential, a facility id,
a room or an operation first checks it against the live APIs and saves
nothing when any check fails. ``CheckFailed.problems`` then lists each
problem as its own sentence.

::

    TenantsError              an operator's input cannot be applied
    ├── NotFound              no tenant or facility with that id or name
    ├── InvalidSetting        a value is out of range or already taken
    └── CheckFailed           a check against Apex or Flourish failed
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar

from cryptography.fernet import InvalidToken
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.errors import CredentialsRejected, SyncError, UpstreamRejected
from shared.logging import register_secret
from shared.models import (
    DEFAULT_FINAL_ORDER_STAGES,
    DEFAULT_SYNC_INTERVAL_SECONDS,
    DeadLetter,
    Facility,
    PackageOutcome,
    SyncRun,
    Tenant,
)
from shared.secrets import SecretKeyError, Vault
from shared.settings import GRAMS_PER_POUND, Settings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Abilities the sync needs (Apex OpenAPI document): read products, read and
#: write batches, read buyers and read shipping orders.
REQUIRED_APEX_ABILITIES = (
    "view:products",
    "view:batches",
    "update:batches",
    "view:buyers",
    "view:shipping-orders",
)

#: Listing operations needs this ability (Apex OpenAPI document).
OPERATIONS_ABILITY = "view:company"

#: The six parent stages every Apex order status belongs to.
APEX_ORDER_STAGES = (
    "Submitted",
    "Accepted",
    "Pending Shipment",
    "In Transit",
    "Delivered",
    "Complete",
)

QUANTITY_MODES = ("create_only", "track")

#: A sync costs Apex credits and a few requests even when nothing changed, so
#: syncing more often than every five minutes mostly spends credits.
MIN_SYNC_INTERVAL_SECONDS = 5 * 60

#: Flourish returns at most 50 packages per page (Flourish API collection).
FLOURISH_PAGE_SIZE = 50

#: Room names quoted back to the operator when a room is not found.
MAX_ROOMS_LISTED = 10

FINISHED_RUN_STATES = ("succeeded", "failed", "cancelled")


class TenantsError(Exception):
    """An operator's request about tenants or facilities that cannot be applied."""


class NotFound(TenantsError):
    """No tenant or facility matches the given id or name."""


class InvalidSetting(TenantsError):
    """A setting is out of range, unknown or already used by another record."""


class CheckFailed(TenantsError):
    """A check against Apex or Flourish failed, so nothing was saved."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# Upstream access -------------------------------------------------------------


class ApexApi(Protocol):
    """The part of ``ApexClient`` that onboarding and status use."""

    def welcome(self) -> Any: ...
    def usage(self) -> Any: ...
    def list_operations(self) -> list[Any]: ...
    def close(self) -> None: ...


class FlourishApi(Protocol):
    """The part of ``FlourishClient`` that onboarding uses."""

    def get_facility(self, facility_id: str) -> Any: ...
    def list_packages(self, *, offset: int = 0, limit: int = 50) -> Any: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Upstreams:
    """Builds API clients for the checks, always against the configured URLs."""

    apex_base_url: str
    flourish_base_url: str
    timeout: float = 30.0

    @classmethod
    def from_settings(
        cls, settings: Settings, timeout: float | None = None
    ) -> Upstreams:
        return cls(
            apex_base_url=settings.apex_base_url,
            flourish_base_url=settings.flourish_base_url,
            timeout=timeout or settings.http_timeout,
        )

    def apex(self, token: str) -> ApexApi:
        from shared.apex.client import ApexClient

        return ApexClient(self.apex_base_url, token, timeout=self.timeout)

    def flourish(self, api_key: str, facility_id: str) -> FlourishApi:
        from shared.flourish.client import FlourishClient

        return FlourishClient(
            self.flourish_base_url, api_key, facility_id, timeout=self.timeout
        )


# Checks ----------------------------------------------------------------------


def check_apex_token(apex: ApexApi) -> list[str]:
    """Return the problems with an Apex token; an empty list means it is usable.

    ``/v1/welcome`` reads no company data and lists the token's abilities.
    Each missing required ability is its own problem.
    """
    try:
        welcome = apex.welcome()
    except CredentialsRejected as exc:
        return [
            f"Apex rejected the token ({_status_text(exc)}): check that it was "
            "copied whole and is still active in Apex."
        ]
    except SyncError as exc:
        return [f"Apex could not be reached to check the token: {exc}"]

    abilities = set(welcome.abilities)
    return [
        f"The Apex token lacks the {ability} ability: add it to the token in "
        "Apex's API management page."
        for ability in REQUIRED_APEX_ABILITIES
        if ability not in abilities
    ]


def check_apex_operation(apex: ApexApi, operation_id: int) -> list[str]:
    """Return the problems with an Apex operation id for the token's company."""
    try:
        operations = apex.list_operations()
    except CredentialsRejected as exc:
        if exc.status == 403:
            return [
                f"Apex rejected the request for operations (HTTP 403): the token "
                f"needs the {OPERATIONS_ABILITY} ability to check operation "
                f"{operation_id}."
            ]
        return [f"Apex rejected the token ({_status_text(exc)})."]
    except SyncError as exc:
        return [f"Apex could not be reached to check operation {operation_id}: {exc}"]

    operation = next((op for op in operations if op.id == operation_id), None)
    if operation is None:
        known = ", ".join(f"{op.id} ({op.name})" for op in operations) or "none"
        return [
            f"Apex operation {operation_id} not found for this token's company. "
            f"Its operations: {known}."
        ]
    if getattr(operation, "disabled", False):
        return [f"Apex operation {operation_id} ({operation.name}) is disabled."]
    return []


def check_flourish_facility(
    flourish: FlourishApi, facility_id: str, wholesale_room: str
) -> list[str]:
    """Return the problems with a Flourish API key, facility id and room."""
    try:
        flourish.get_facility(facility_id)
    except CredentialsRejected as exc:
        return [
            f"Flourish rejected the API key ({_status_text(exc)}): check that it "
            "is active and belongs to the facility's company."
        ]
    except UpstreamRejected as exc:
        if exc.status == 404:
            return [
                f"Flourish facility {facility_id!r} not found for this API key: "
                "check the facility id (the FacilityID of the facility)."
            ]
        return [f"Flourish rejected facility {facility_id!r}: {exc}"]
    except SyncError as exc:
        return [
            f"Flourish could not be reached to check facility {facility_id!r}: {exc}"
        ]

    return check_wholesale_room(flourish, wholesale_room)


def check_wholesale_room(flourish: FlourishApi, wholesale_room: str) -> list[str]:
    """Return a problem unless some package of the facility is in the room.

    NOTE: Flourish has no endpoint that lists rooms (areas), so this pages
    through the facility's packages until one reports ``area_name`` equal to
    the room. It is the best check available, but it cannot tell an empty
    room from a missing one, so a room with no packages yet is reported as
    not found.
    """
    try:
        found, seen = _scan_rooms(flourish, wholesale_room)
    except SyncError as exc:
        return [
            f"Flourish could not be reached to check room {wholesale_room!r}: {exc}"
        ]
    if found:
        return []

    return [_room_not_found_message(wholesale_room, seen)]


def _scan_rooms(flourish: FlourishApi, room: str) -> tuple[bool, set[str]]:
    seen: set[str] = set()
    for names in _iter_room_names(flourish):
        if room in names:
            return True, seen
        seen |= names
    return False, seen


def _iter_room_names(flourish: FlourishApi) -> Iterator[set[str]]:
    """Yield the room names of each page of packages, first page first."""
    offset = 0
    while True:
        page = flourish.list_packages(offset=offset, limit=FLOURISH_PAGE_SIZE)
        raw_rows = [row.raw for row in page.invalid if isinstance(row.raw, dict)]
        # Rows that failed validation (no SKU, bad quantity) still name a room.
        names = {row.area_name for row in page.items} | {
            raw.get("area_name") for raw in raw_rows
        }
        yield {name for name in names if isinstance(name, str) and name}

        rows = len(page.items) + len(page.invalid)
        if not page.has_next or rows == 0:
            return
        offset += rows


def _room_not_found_message(room: str, seen: set[str]) -> str:
    close = sorted(name for name in seen if name.casefold() == room.casefold())
    if close:
        return (
            f"Room {room!r} not found in the facility's packages. Did you mean "
            f"{close[0]!r}? Room names must match exactly."
        )
    listed = ", ".join(repr(name) for name in sorted(seen)[:MAX_ROOMS_LISTED])
    return (
        f"Room {room!r} not found: no package of the facility is in it, and "
        "an empty room cannot be told apart from a missing one. "
        f"Rooms that contain packages: {listed or 'none'}."
    )


def _status_text(exc: SyncError) -> str:
    return f"HTTP {exc.status}" if exc.status else "no status"


# Lookups ---------------------------------------------------------------------


def find_tenant(session: Session, ref: str) -> Tenant:
    """Return the tenant whose id or name is ``ref``; raise NotFound otherwise."""
    tenant = session.get(Tenant, int(ref)) if ref.isdigit() else None
    tenant = tenant or session.scalar(select(Tenant).where(Tenant.name == ref))
    if tenant is None:
        raise NotFound(f"Tenant {ref!r} not found: `apexsync tenants list` lists them.")
    return tenant


def find_facility(session: Session, ref: str, tenant: Tenant | None = None) -> Facility:
    """Return the facility whose id or name is ``ref``, within ``tenant`` if given.

    Raises NotFound when none matches and InvalidSetting when a name is used
    by facilities of several tenants.
    """
    query = select(Facility)
    if tenant is not None:
        query = query.where(Facility.tenant_id == tenant.id)

    by_id = (
        session.scalar(query.where(Facility.id == int(ref))) if ref.isdigit() else None
    )
    if by_id is not None:
        return by_id

    matches = list(session.scalars(query.where(Facility.name == ref)))
    if not matches:
        raise NotFound(
            f"Facility {ref!r} not found: `apexsync facilities list` lists them."
        )
    if len(matches) > 1:
        raise InvalidSetting(
            f"Facility name {ref!r} is used by several tenants: "
            "pass the facility id or --tenant."
        )
    return matches[0]


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.id)))


def list_facilities(session: Session, tenant: Tenant | None = None) -> list[Facility]:
    query = select(Facility).order_by(Facility.tenant_id, Facility.id)
    if tenant is not None:
        query = query.where(Facility.tenant_id == tenant.id)
    return list(session.scalars(query))


# Settings validation ---------------------------------------------------------


def validate_final_order_stages(stages: Sequence[str]) -> list[str]:
    """Return the stages in Apex's spelling; raise InvalidSetting on unknown ones."""
    by_key = {stage.casefold(): stage for stage in APEX_ORDER_STAGES}
    unknown = [stage for stage in stages if stage.strip().casefold() not in by_key]
    if unknown or not stages:
        raise InvalidSetting(
            f"Invalid final order stages {list(stages)!r}: give one or more of "
            f"{', '.join(APEX_ORDER_STAGES)}."
        )
    return list(dict.fromkeys(by_key[stage.strip().casefold()] for stage in stages))


def validate_grams_per_pound(value: object) -> Decimal:
    """Return the factor as a Decimal; raise InvalidSetting unless 400-500."""
    try:
        factor = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidSetting(
            f"Invalid grams per pound {value!r}: give a number "
            f"such as {GRAMS_PER_POUND}."
        ) from exc
    # The exact pound is 453.59237 g; some companies round it (453.6, 454).
    # Anything far from that is a typing mistake.
    if not factor.is_finite() or not Decimal(400) <= factor <= Decimal(500):
        raise InvalidSetting(
            f"Invalid grams per pound {value}: expected a value near {GRAMS_PER_POUND}."
        )
    return factor


def validate_quantity_mode(mode: str) -> str:
    if mode not in QUANTITY_MODES:
        raise InvalidSetting(
            f"Invalid quantity mode {mode!r}: use {' or '.join(QUANTITY_MODES)}."
        )
    if mode == "track":
        # TODO: tracking needs the open Apex orders per batch subtracted from
        # Flourish's available quantity; the pipeline does not do that yet.
        raise InvalidSetting(
            "Quantity mode 'track' is not supported yet; use 'create_only', "
            "which never overwrites a batch once it exists."
        )
    return mode


def validate_sync_interval(seconds: int) -> int:
    if seconds < MIN_SYNC_INTERVAL_SECONDS:
        raise InvalidSetting(
            f"Invalid sync interval {seconds} s: the minimum is "
            f"{MIN_SYNC_INTERVAL_SECONDS} s."
        )
    return seconds


def validate_operation_id(operation_id: int) -> int:
    if operation_id <= 0:
        raise InvalidSetting(
            f"Invalid Apex operation id {operation_id}: ids are "
            "positive numbers (`GET /v1/operations` lists them)."
        )
    return operation_id


def _checked(value: _T | None, validate: Callable[[_T], _R]) -> _R | None:
    return None if value is None else validate(value)


def _require_name(name: str, kind: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidSetting(f"The {kind} name is missing.")
    return name


def _require_text(value: str, label: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidSetting(f"The {label} is missing.")
    return value


# Tenants ---------------------------------------------------------------------


@dataclass
class TenantChanges:
    """Fields of a tenant to set; None leaves a field as it is."""

    name: str | None = None
    apex_token: str | None = None
    final_order_stages: Sequence[str] | None = None
    grams_per_pound: Decimal | str | None = None
    auto_push_orders: bool | None = None
    quantity_mode: str | None = None

    def validated(self) -> TenantChanges:
        """Return a copy with every given value checked and normalised."""
        return TenantChanges(
            name=_checked(self.name, lambda v: _require_name(v, "tenant")),
            apex_token=_checked(
                self.apex_token, lambda v: _require_text(v, "Apex token")
            ),
            final_order_stages=_checked(
                self.final_order_stages, validate_final_order_stages
            ),
            grams_per_pound=_checked(self.grams_per_pound, validate_grams_per_pound),
            auto_push_orders=self.auto_push_orders,
            quantity_mode=_checked(self.quantity_mode, validate_quantity_mode),
        )


def add_tenant(
    session: Session, vault: Vault, upstreams: Upstreams, changes: TenantChanges
) -> Tenant:
    """Check the Apex token, then save a new tenant; raise before saving anything.

    ``changes.name`` and ``changes.apex_token`` are required; other fields
    fall back to the defaults. Raises InvalidSetting or CheckFailed.
    """
    values = changes.validated()
    if values.name is None or values.apex_token is None:
        raise InvalidSetting("A tenant needs a name and an Apex token.")
    _ensure_tenant_name_free(session, values.name)
    _check_token(upstreams, values.apex_token)

    tenant = Tenant(
        name=values.name,
        apex_token_encrypted=vault.encrypt(values.apex_token),
        final_order_stages=list(
            values.final_order_stages or DEFAULT_FINAL_ORDER_STAGES
        ),
        grams_per_pound=values.grams_per_pound or GRAMS_PER_POUND,
        auto_push_orders=bool(values.auto_push_orders),
        quantity_mode=values.quantity_mode or "create_only",
    )
    session.add(tenant)
    session.flush()
    logger.info("tenant=%s added name=%r", tenant.id, tenant.name)
    return tenant


def update_tenant(
    session: Session,
    vault: Vault,
    upstreams: Upstreams,
    tenant: Tenant,
    changes: TenantChanges,
) -> Tenant:
    """Apply ``changes`` to ``tenant``; a new token is checked first.

    A checked new token also clears a "credentials_rejected" state. Raises
    InvalidSetting or CheckFailed, in which case nothing changed.
    """
    values = changes.validated()
    if values.name is not None and values.name != tenant.name:
        _ensure_tenant_name_free(session, values.name)
    if values.apex_token is not None:
        _check_token(upstreams, values.apex_token)

    _apply_tenant_changes(vault, tenant, values)
    session.flush()
    logger.info("tenant=%s updated", tenant.id)
    return tenant


def _apply_tenant_changes(vault: Vault, tenant: Tenant, values: TenantChanges) -> None:
    if values.name is not None:
        tenant.name = values.name
    if values.apex_token is not None:
        tenant.apex_token_encrypted = vault.encrypt(values.apex_token)
        if tenant.apex_state == "credentials_rejected":
            tenant.apex_state, tenant.apex_state_reason = "active", None
    if values.final_order_stages is not None:
        tenant.final_order_stages = list(values.final_order_stages)
    if isinstance(values.grams_per_pound, Decimal):
        tenant.grams_per_pound = values.grams_per_pound
    if values.auto_push_orders is not None:
        tenant.auto_push_orders = values.auto_push_orders
    if values.quantity_mode is not None:
        tenant.quantity_mode = values.quantity_mode


def _ensure_tenant_name_free(session: Session, name: str) -> None:
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise InvalidSetting(f"A tenant named {name!r} already exists.")


def _check_token(upstreams: Upstreams, token: str) -> None:
    register_secret(token)
    with closing(upstreams.apex(token)) as apex:
        problems = check_apex_token(apex)
    if problems:
        raise CheckFailed(problems)


def decrypt_apex_token(vault: Vault, tenant: Tenant) -> str:
    """Decrypt the tenant's Apex token and register it for log masking."""
    token = vault.decrypt(tenant.apex_token_encrypted)
    register_secret(token)
    return token


def decrypt_flourish_api_key(vault: Vault, facility: Facility) -> str:
    """Decrypt the facility's Flourish API key and register it for log masking."""
    api_key = vault.decrypt(facility.flourish_api_key_encrypted)
    register_secret(api_key)
    return api_key


# Facilities ------------------------------------------------------------------


@dataclass
class FacilityChanges:
    """Fields of a facility to set; None leaves a field as it is."""

    name: str | None = None
    flourish_api_key: str | None = None
    flourish_facility_id: str | None = None
    wholesale_room: str | None = None
    apex_operation_id: int | None = None
    sync_interval_seconds: int | None = None

    def validated(self) -> FacilityChanges:
        """Return a copy with every given value checked and normalised."""
        return FacilityChanges(
            name=_checked(self.name, lambda v: _require_name(v, "facility")),
            flourish_api_key=_checked(
                self.flourish_api_key, lambda v: _require_text(v, "Flourish API key")
            ),
            flourish_facility_id=_checked(
                self.flourish_facility_id,
                lambda v: _require_text(v, "Flourish facility id"),
            ),
            wholesale_room=_checked(
                self.wholesale_room, lambda v: _require_text(v, "wholesale room")
            ),
            apex_operation_id=_checked(self.apex_operation_id, validate_operation_id),
            sync_interval_seconds=_checked(
                self.sync_interval_seconds, validate_sync_interval
            ),
        )

    def touches_upstream(self) -> bool:
        """Tell whether a change needs the checks against the APIs."""
        return any(
            value is not None
            for value in (
                self.flourish_api_key,
                self.flourish_facility_id,
                self.wholesale_room,
                self.apex_operation_id,
            )
        )


@dataclass(frozen=True)
class FacilityTarget:
    """The upstream side of a facility: what the checks verify."""

    flourish_api_key: str
    flourish_facility_id: str
    wholesale_room: str
    apex_operation_id: int


def check_facility_target(
    upstreams: Upstreams, apex_token: str, target: FacilityTarget
) -> list[str]:
    """Return every problem with a facility's key, id, room and operation."""
    register_secret(target.flourish_api_key)
    with closing(
        upstreams.flourish(target.flourish_api_key, target.flourish_facility_id)
    ) as flourish:
        problems = check_flourish_facility(
            flourish, target.flourish_facility_id, target.wholesale_room
        )
    with closing(upstreams.apex(apex_token)) as apex:
        problems += check_apex_operation(apex, target.apex_operation_id)
    return problems


def add_facility(
    session: Session,
    vault: Vault,
    upstreams: Upstreams,
    tenant: Tenant,
    changes: FacilityChanges,
) -> Facility:
    """Check and save a new facility of ``tenant``; raise before saving anything.

    Every field but ``sync_interval_seconds`` is required. The first sync is
    due at once. Raises InvalidSetting or CheckFailed.
    """
    values = changes.validated()
    target = _new_target(values)
    if values.name is None:
        raise InvalidSetting("The facility name is missing.")
    _ensure_facility_free(session, tenant, values.name, target.flourish_facility_id)
    _check_target(upstreams, decrypt_apex_token(vault, tenant), target)

    facility = Facility(
        tenant_id=tenant.id,
        name=values.name,
        flourish_facility_id=target.flourish_facility_id,
        flourish_api_key_encrypted=vault.encrypt(target.flourish_api_key),
        wholesale_room=target.wholesale_room,
        apex_operation_id=target.apex_operation_id,
        sync_interval_seconds=values.sync_interval_seconds
        or DEFAULT_SYNC_INTERVAL_SECONDS,
        next_sync_at=datetime.now(UTC),
    )
    session.add(facility)
    session.flush()
    logger.info(
        "tenant=%s facility=%s added name=%r", tenant.id, facility.id, facility.name
    )
    return facility


def _new_target(values: FacilityChanges) -> FacilityTarget:
    missing = [
        label
        for label, value in (
            ("Flourish API key", values.flourish_api_key),
            ("Flourish facility id", values.flourish_facility_id),
            ("wholesale room", values.wholesale_room),
            ("Apex operation id", values.apex_operation_id),
        )
        if value is None
    ]
    if missing:
        raise InvalidSetting(f"A facility needs: {', '.join(missing)}.")
    return FacilityTarget(
        flourish_api_key=str(values.flourish_api_key),
        flourish_facility_id=str(values.flourish_facility_id),
        wholesale_room=str(values.wholesale_room),
        apex_operation_id=int(values.apex_operation_id or 0),
    )


def update_facility(
    session: Session,
    vault: Vault,
    upstreams: Upstreams,
    facility: Facility,
    changes: FacilityChanges,
) -> Facility:
    """Apply ``changes`` to ``facility``, checking the upstream side if it changes.

    A change of key, facility id, room or operation runs every facility
    check on the resulting combination and, once it passes, clears a
    "credentials_rejected" state. Raises InvalidSetting or CheckFailed, in
    which case nothing changed.
    """
    values = changes.validated()
    tenant = facility.tenant
    name = values.name or facility.name
    target = _merged_target(vault, facility, values)
    if (
        name != facility.name
        or target.flourish_facility_id != facility.flourish_facility_id
    ):
        _ensure_facility_free(
            session, tenant, name, target.flourish_facility_id, facility
        )
    if values.touches_upstream():
        _check_target(upstreams, decrypt_apex_token(vault, tenant), target)

    _apply_facility_changes(vault, facility, name, target, values)
    session.flush()
    logger.info("tenant=%s facility=%s updated", tenant.id, facility.id)
    return facility


def _merged_target(
    vault: Vault, facility: Facility, values: FacilityChanges
) -> FacilityTarget:
    api_key = values.flourish_api_key or decrypt_flourish_api_key(vault, facility)
    return FacilityTarget(
        flourish_api_key=api_key,
        flourish_facility_id=values.flourish_facility_id
        or facility.flourish_facility_id,
        wholesale_room=values.wholesale_room or facility.wholesale_room,
        apex_operation_id=values.apex_operation_id or facility.apex_operation_id,
    )


def _apply_facility_changes(
    vault: Vault,
    facility: Facility,
    name: str,
    target: FacilityTarget,
    values: FacilityChanges,
) -> None:
    facility.name = name
    if values.flourish_api_key is not None:
        facility.flourish_api_key_encrypted = vault.encrypt(target.flourish_api_key)
    facility.flourish_facility_id = target.flourish_facility_id
    facility.wholesale_room = target.wholesale_room
    facility.apex_operation_id = target.apex_operation_id
    if values.touches_upstream() and facility.state == "credentials_rejected":
        facility.state, facility.state_reason = "active", None

    interval = values.sync_interval_seconds
    if interval is not None:
        facility.sync_interval_seconds = interval
        # A shorter interval should not wait out the longer one already planned.
        soonest = datetime.now(UTC) + timedelta(seconds=interval)
        if _aware(facility.next_sync_at) > soonest:
            facility.next_sync_at = soonest


def pause_facility(
    session: Session, facility: Facility, reason: str | None = None
) -> None:
    """Stop scheduled syncs of the facility until ``resume_facility``."""
    facility.state = "paused"
    facility.state_reason = reason or "paused by an operator"
    session.flush()
    logger.info("tenant=%s facility=%s paused", facility.tenant_id, facility.id)


def resume_facility(
    session: Session, vault: Vault, upstreams: Upstreams, facility: Facility
) -> None:
    """Let scheduled syncs of the facility run again.

    A facility stopped for rejected credentials is checked against the APIs
    first, so it resumes only once the key works again (raises CheckFailed).
    """
    if facility.state == "credentials_rejected":
        target = _merged_target(vault, facility, FacilityChanges())
        _check_target(upstreams, decrypt_apex_token(vault, facility.tenant), target)

    facility.state, facility.state_reason = "active", None
    session.flush()
    logger.info("tenant=%s facility=%s resumed", facility.tenant_id, facility.id)


def _check_target(
    upstreams: Upstreams, apex_token: str, target: FacilityTarget
) -> None:
    problems = check_facility_target(upstreams, apex_token, target)
    if problems:
        raise CheckFailed(problems)


def _ensure_facility_free(
    session: Session,
    tenant: Tenant,
    name: str,
    flourish_facility_id: str,
    current: Facility | None = None,
) -> None:
    for other in list_facilities(session, tenant):
        if current is not None and other.id == current.id:
            continue
        if other.name == name:
            raise InvalidSetting(
                f"Tenant {tenant.name!r} already has a facility named {name!r}."
            )
        if other.flourish_facility_id == flourish_facility_id:
            raise InvalidSetting(
                f"Flourish facility {flourish_facility_id!r} is "
                f"already set up as {other.name!r} (id {other.id})."
            )


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes even for timezone-aware columns.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Secrets ---------------------------------------------------------------------


@dataclass(frozen=True)
class RotationReport:
    tenants: int
    facilities: int


def rotate_secrets(session: Session, vault: Vault) -> RotationReport:
    """Re-encrypt every stored credential with the vault's first key.

    Run it after putting a new key first in ``APEXSYNC_SECRET_KEY``. The old
    key can leave the list once this has committed. Raises SecretKeyError,
    naming the record, if a credential fits none of the keys. The caller's
    transaction should then roll back, so no credential is left half rotated.
    """
    tenants = list_tenants(session)
    for tenant in tenants:
        tenant.apex_token_encrypted = _rotate(
            vault, tenant.apex_token_encrypted, f"tenant {tenant.id}"
        )
    facilities = list_facilities(session)
    for facility in facilities:
        facility.flourish_api_key_encrypted = _rotate(
            vault, facility.flourish_api_key_encrypted, f"facility {facility.id}"
        )

    session.flush()
    logger.info(
        "secrets rotated tenants=%s facilities=%s", len(tenants), len(facilities)
    )
    return RotationReport(tenants=len(tenants), facilities=len(facilities))


def _rotate(vault: Vault, ciphertext: str, owner: str) -> str:
    try:
        return vault.rotate(ciphertext)
    except InvalidToken as exc:
        raise SecretKeyError(
            f"The credential of {owner} cannot be decrypted with any key in "
            "APEXSYNC_SECRET_KEY. Add the key it was encrypted with to the list."
        ) from exc


# Status ----------------------------------------------------------------------


@dataclass
class RunSummary:
    """Counts of one finished sync run."""

    id: int
    state: str
    trigger: str
    started_at: datetime | None
    finished_at: datetime | None
    fetched: int
    created: int
    updated: int
    skipped: int
    unmapped: int
    failed: int
    error: str | None


@dataclass
class FacilityStatus:
    id: int
    name: str
    state: str
    state_reason: str | None
    flourish_facility_id: str
    wholesale_room: str
    apex_operation_id: int
    sync_interval_seconds: int
    last_sync_at: datetime | None
    next_sync_at: datetime | None
    active_run_id: int | None
    last_run: RunSummary | None
    unmapped_skus: list[str]
    open_dead_letters: int


@dataclass
class CreditsStatus:
    """Apex credits of the current month, or why they could not be read."""

    month: str | None = None
    used: int | None = None
    monthly_limit: int | None = None
    error: str | None = None


@dataclass
class TenantStatus:
    id: int
    name: str
    apex_state: str
    apex_state_reason: str | None
    apex_paused_until: datetime | None
    quantity_mode: str
    auto_push_orders: bool
    credits: CreditsStatus
    open_dead_letters: int
    facilities: list[FacilityStatus] = field(default_factory=list)


def collect_status(
    session: Session,
    *,
    vault: Vault | None = None,
    upstreams: Upstreams | None = None,
    tenant: Tenant | None = None,
) -> list[TenantStatus]:
    """Return the state of every tenant (or of ``tenant``) and its facilities.

    Credits come from Apex ``/v1/usage`` when ``vault`` and ``upstreams`` are
    given. A SyncError or SecretKeyError on that call is reported in
    ``CreditsStatus.error`` instead of being raised.
    """
    tenants = [tenant] if tenant is not None else list_tenants(session)
    letters = _open_dead_letters(session)
    return [
        TenantStatus(
            id=item.id,
            name=item.name,
            apex_state=item.apex_state,
            apex_state_reason=item.apex_state_reason,
            apex_paused_until=item.apex_paused_until,
            quantity_mode=item.quantity_mode,
            auto_push_orders=item.auto_push_orders,
            credits=_read_credits(item, vault, upstreams),
            open_dead_letters=sum(n for (t, _), n in letters.items() if t == item.id),
            facilities=[
                _facility_status(session, facility, letters)
                for facility in list_facilities(session, item)
            ],
        )
        for item in tenants
    ]


def _facility_status(
    session: Session,
    facility: Facility,
    letters: dict[tuple[int | None, int | None], int],
) -> FacilityStatus:
    last_run = _last_finished_run(session, facility)
    return FacilityStatus(
        id=facility.id,
        name=facility.name,
        state=facility.state,
        state_reason=facility.state_reason,
        flourish_facility_id=facility.flourish_facility_id,
        wholesale_room=facility.wholesale_room,
        apex_operation_id=facility.apex_operation_id,
        sync_interval_seconds=facility.sync_interval_seconds,
        last_sync_at=last_run.finished_at if last_run else None,
        next_sync_at=facility.next_sync_at,
        active_run_id=_active_run_id(session, facility),
        last_run=_summarise(last_run) if last_run else None,
        unmapped_skus=_unmapped_skus(session, last_run) if last_run else [],
        open_dead_letters=letters.get((facility.tenant_id, facility.id), 0),
    )


def _last_finished_run(session: Session, facility: Facility) -> SyncRun | None:
    return session.scalar(
        select(SyncRun)
        .where(
            SyncRun.facility_id == facility.id, SyncRun.state.in_(FINISHED_RUN_STATES)
        )
        .order_by(SyncRun.finished_at.desc(), SyncRun.id.desc())
        .limit(1)
    )


def _active_run_id(session: Session, facility: Facility) -> int | None:
    return session.scalar(
        select(SyncRun.id)
        .where(
            SyncRun.facility_id == facility.id, SyncRun.state.in_(("queued", "running"))
        )
        .limit(1)
    )


def _summarise(run: SyncRun) -> RunSummary:
    return RunSummary(
        id=run.id,
        state=run.state,
        trigger=run.trigger,
        started_at=run.started_at,
        finished_at=run.finished_at,
        fetched=run.fetched,
        created=run.created,
        updated=run.updated,
        skipped=run.skipped,
        unmapped=run.unmapped,
        failed=run.failed,
        error=run.error,
    )


def _unmapped_skus(session: Session, run: SyncRun) -> list[str]:
    skus = session.scalars(
        select(PackageOutcome.sku)
        .where(
            PackageOutcome.run_id == run.id,
            PackageOutcome.tenant_id == run.tenant_id,
            PackageOutcome.outcome == "unmapped",
            PackageOutcome.sku.is_not(None),
        )
        .distinct()
    )
    return sorted(sku for sku in skus if sku)


def _open_dead_letters(session: Session) -> dict[tuple[int | None, int | None], int]:
    rows = session.execute(
        select(DeadLetter.tenant_id, DeadLetter.facility_id, func.count())
        .where(DeadLetter.state == "open")
        .group_by(DeadLetter.tenant_id, DeadLetter.facility_id)
    )
    return {(tenant_id, facility_id): count for tenant_id, facility_id, count in rows}


def _read_credits(
    tenant: Tenant, vault: Vault | None, upstreams: Upstreams | None
) -> CreditsStatus:
    if vault is None or upstreams is None:
        return CreditsStatus(error="not requested")
    if tenant.apex_state == "credentials_rejected":
        return CreditsStatus(error="Apex token rejected; update it first")
    try:
        with closing(upstreams.apex(decrypt_apex_token(vault, tenant))) as apex:
            usage = apex.usage()
    except (SyncError, SecretKeyError) as exc:
        logger.warning("tenant=%s apex usage unavailable: %s", tenant.id, exc)
        return CreditsStatus(error=str(exc))
    return CreditsStatus(
        month=usage.month,
        used=usage.credits_used,
        monthly_limit=usage.monthly_credit_limit,
    )
