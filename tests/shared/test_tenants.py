"""Onboarding checks, tenant and facility changes, key rotation and status.

The upstream APIs are replaced by small fakes that return the real client
schemas, so each test sets up exactly one upstream answer.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared import tenants as ops
from shared.apex.schemas import Operation, Usage, Welcome
from shared.db import make_engine
from shared.errors import CredentialsRejected, UpstreamRejected, UpstreamUnavailable
from shared.flourish.schemas import FlourishFacility, Page, parse_package_row
from shared.logging import MASK, forget_registered_secrets, redact
from shared.models import (
    Base,
    DeadLetter,
    Facility,
    PackageOutcome,
    SyncRun,
    Tenant,
)
from shared.secrets import SecretKeyError, Vault

ALL_ABILITIES = [*ops.REQUIRED_APEX_ABILITIES, "view:company"]
ROOM = "Wholesale Vault"


# Fakes -----------------------------------------------------------------------


class FakeApex:
    def __init__(self) -> None:
        self.abilities = list(ALL_ABILITIES)
        self.operations = [
            Operation.model_validate({"id": 11, "name": "Main Cultivation"}),
            Operation.model_validate({"id": 12, "name": "Old Site", "disabled": True}),
        ]
        self.welcome_error: Exception | None = None
        self.operations_error: Exception | None = None
        self.usage_error: Exception | None = None
        self.calls: list[str] = []

    def welcome(self) -> Welcome:
        self.calls.append("welcome")
        if self.welcome_error:
            raise self.welcome_error
        return Welcome.model_validate({"name": "Co", "access": self.abilities})

    def list_operations(self) -> list[Operation]:
        self.calls.append("operations")
        if self.operations_error:
            raise self.operations_error
        return self.operations

    def usage(self) -> Usage:
        self.calls.append("usage")
        if self.usage_error:
            raise self.usage_error
        return Usage.model_validate(
            {"month": "2025-06", "credits_used": 1234, "monthly_credit_limit": None}
        )

    def close(self) -> None:
        pass


class FakeFlourish:
    def __init__(self) -> None:
        self.facility_error: Exception | None = None
        self.pages: list[list[dict[str, Any]]] = [
            [package("P1", "Quarantine"), package("P2", "Back Room")],
            [package("P3", ROOM)],
        ]
        self.offsets: list[int] = []

    def get_facility(self, facility_id: str) -> FlourishFacility:
        if self.facility_error:
            raise self.facility_error
        return FlourishFacility.model_validate({"id": facility_id})

    def list_packages(self, *, offset: int = 0, limit: int = 50) -> Page[Any]:
        self.offsets.append(offset)
        starts = [
            sum(len(page) for page in self.pages[:i]) for i in range(len(self.pages))
        ]
        index = starts.index(offset) if offset in starts else len(self.pages)
        raw_rows = self.pages[index] if index < len(self.pages) else []
        parsed = [parse_package_row(raw) for raw in raw_rows]
        return Page(
            items=[row for row in parsed if not isinstance(row, tuple)],
            invalid=[row for row in parsed if isinstance(row, tuple)],
            offset=offset,
            limit=limit,
            total=None,
            has_next=index + 1 < len(self.pages),
        )

    def close(self) -> None:
        pass


class FakeUpstreams:
    def __init__(self) -> None:
        self.apex_api = FakeApex()
        self.flourish_api = FakeFlourish()
        self.tokens: list[str] = []
        self.keys: list[tuple[str, str]] = []

    def apex(self, token: str) -> FakeApex:
        self.tokens.append(token)
        return self.apex_api

    def flourish(self, api_key: str, facility_id: str) -> FakeFlourish:
        self.keys.append((api_key, facility_id))
        return self.flourish_api


def package(tag: str, room: str, sku: str | None = "SKU-1") -> dict[str, Any]:
    return {
        "package_id": tag,
        "sku": sku,
        "qty": "10",
        "available_qty": "10",
        "uom": "g",
        "area_name": room,
    }


# Fixtures --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    forget_registered_secrets()
    yield
    forget_registered_secrets()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tenants.db'}")
    Base.metadata.create_all(engine)
    with sessionmaker(bind=engine, expire_on_commit=False)() as db:
        yield db
    engine.dispose()


@pytest.fixture
def vault_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def vault(vault_key: str) -> Vault:
    return Vault([vault_key])


@pytest.fixture
def upstreams() -> FakeUpstreams:
    return FakeUpstreams()


@pytest.fixture
def tenant(session: Session, vault: Vault, upstreams: FakeUpstreams) -> Tenant:
    changes = ops.TenantChanges(name="Green Valley", apex_token="apex-token-green")
    return ops.add_tenant(session, vault, upstreams, changes)  # type: ignore[arg-type]


def facility_changes(**overrides: Any) -> ops.FacilityChanges:
    values: dict[str, Any] = {
        "name": "Cultivation",
        "flourish_api_key": "flourish-key-green",
        "flourish_facility_id": "58b9b09d280e20ea24a126bb",
        "wholesale_room": ROOM,
        "apex_operation_id": 11,
    }
    values.update(overrides)
    return ops.FacilityChanges(**values)


@pytest.fixture
def facility(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> Facility:
    upstreams.flourish_api.offsets.clear()
    return ops.add_facility(session, vault, upstreams, tenant, facility_changes())  # type: ignore[arg-type]


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def add_tenant(
    session: Session, vault: Vault, upstreams: FakeUpstreams, **kw: Any
) -> Tenant:
    changes = ops.TenantChanges(
        **{"name": "Coastal", "apex_token": "apex-token-c", **kw}
    )
    return ops.add_tenant(session, vault, upstreams, changes)  # type: ignore[arg-type]


def add_facility(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant, **kw: Any
) -> Facility:
    changes = facility_changes(**kw)
    return ops.add_facility(session, vault, upstreams, tenant, changes)  # type: ignore[arg-type]


# Tenants ---------------------------------------------------------------------


def test_add_tenant_encrypts_token(
    session: Session, vault: Vault, tenant: Tenant
) -> None:
    assert tenant.id is not None
    assert "apex-token-green" not in tenant.apex_token_encrypted
    assert vault.decrypt(tenant.apex_token_encrypted) == "apex-token-green"


def test_add_tenant_applies_defaults(tenant: Tenant) -> None:
    assert tenant.final_order_stages == ["Accepted", "Pending Shipment"]
    assert tenant.grams_per_pound == Decimal("453.59237")
    assert tenant.quantity_mode == "create_only"
    assert tenant.auto_push_orders is False


def test_add_tenant_registers_token_for_masking(tenant: Tenant) -> None:
    assert redact("token apex-token-green leaked") == f"token {MASK} leaked"


def test_add_tenant_rejected_token_saves_nothing(
    session: Session, vault: Vault, upstreams: FakeUpstreams
) -> None:
    upstreams.apex_api.welcome_error = CredentialsRejected(
        "Unauthenticated.", status=401
    )

    with pytest.raises(ops.CheckFailed) as failure:
        add_tenant(session, vault, upstreams)

    assert len(failure.value.problems) == 1
    assert "Apex rejected the token" in failure.value.problems[0]
    assert count(session, Tenant) == 0


def test_add_tenant_names_each_missing_ability(
    session: Session, vault: Vault, upstreams: FakeUpstreams
) -> None:
    upstreams.apex_api.abilities = ["view:products", "view:batches", "view:buyers"]

    with pytest.raises(ops.CheckFailed) as failure:
        add_tenant(session, vault, upstreams)

    problems = failure.value.problems
    assert len(problems) == 2
    assert "update:batches" in problems[0]
    assert "view:shipping-orders" in problems[1]
    assert count(session, Tenant) == 0


def test_add_tenant_unreachable_apex_saves_nothing(
    session: Session, vault: Vault, upstreams: FakeUpstreams
) -> None:
    upstreams.apex_api.welcome_error = UpstreamUnavailable("Apex timed out.")

    with pytest.raises(ops.CheckFailed, match="could not be reached"):
        add_tenant(session, vault, upstreams)

    assert count(session, Tenant) == 0


def test_add_tenant_rejects_duplicate_name(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.InvalidSetting, match="already exists"):
        add_tenant(session, vault, upstreams, name="Green Valley")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param(
            "final_order_stages", ["Shipped"], "final order stages", id="stage"
        ),
        pytest.param("final_order_stages", [], "final order stages", id="no-stage"),
        pytest.param("grams_per_pound", "454g", "grams per pound", id="grams-text"),
        pytest.param("grams_per_pound", "1000", "grams per pound", id="grams-range"),
        pytest.param("quantity_mode", "sometimes", "quantity mode", id="mode"),
        pytest.param("name", "  ", "name is missing", id="blank-name"),
    ],
)
def test_add_tenant_rejects_invalid_setting(
    session: Session,
    vault: Vault,
    upstreams: FakeUpstreams,
    field: str,
    value: Any,
    message: str,
) -> None:
    with pytest.raises(ops.InvalidSetting, match=message):
        add_tenant(session, vault, upstreams, **{field: value})

    assert upstreams.apex_api.calls == []


def test_add_tenant_normalises_stage_spelling(
    session: Session, vault: Vault, upstreams: FakeUpstreams
) -> None:
    created = add_tenant(
        session,
        vault,
        upstreams,
        final_order_stages=["accepted", "IN TRANSIT", "Accepted"],
    )

    assert created.final_order_stages == ["Accepted", "In Transit"]


def test_update_tenant_rejected_token_keeps_old(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.apex_api.welcome_error = CredentialsRejected(
        "Unauthenticated.", status=401
    )
    changes = ops.TenantChanges(apex_token="new-token-value", auto_push_orders=True)

    with pytest.raises(ops.CheckFailed):
        ops.update_tenant(session, vault, upstreams, tenant, changes)  # type: ignore[arg-type]

    assert vault.decrypt(tenant.apex_token_encrypted) == "apex-token-green"
    assert tenant.auto_push_orders is False


def test_update_tenant_new_token_clears_rejection(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    tenant.apex_state, tenant.apex_state_reason = "credentials_rejected", "401"

    changes = ops.TenantChanges(apex_token="new-token-value")
    ops.update_tenant(session, vault, upstreams, tenant, changes)  # type: ignore[arg-type]

    assert vault.decrypt(tenant.apex_token_encrypted) == "new-token-value"
    assert tenant.apex_state == "active"
    assert tenant.apex_state_reason is None


def test_update_tenant_settings_skip_checks(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.apex_api.calls.clear()
    changes = ops.TenantChanges(grams_per_pound="453.6", auto_push_orders=True)

    ops.update_tenant(session, vault, upstreams, tenant, changes)  # type: ignore[arg-type]

    assert tenant.grams_per_pound == Decimal("453.6")
    assert tenant.auto_push_orders is True
    assert upstreams.apex_api.calls == []


def test_find_tenant_by_id_or_name(session: Session, tenant: Tenant) -> None:
    assert ops.find_tenant(session, str(tenant.id)) is tenant
    assert ops.find_tenant(session, "Green Valley") is tenant


def test_find_tenant_unknown_raises(session: Session) -> None:
    with pytest.raises(ops.NotFound, match="'Nope' not found"):
        ops.find_tenant(session, "Nope")


# Facilities ------------------------------------------------------------------


def test_add_facility_saves_checked_facility(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    assert facility.wholesale_room == ROOM
    assert facility.state == "active"
    assert vault.decrypt(facility.flourish_api_key_encrypted) == "flourish-key-green"
    assert upstreams.keys[-1] == ("flourish-key-green", "58b9b09d280e20ea24a126bb")
    assert upstreams.tokens[-1] == "apex-token-green"


def test_add_facility_pages_until_room_found(
    upstreams: FakeUpstreams, facility: Facility
) -> None:
    assert upstreams.flourish_api.offsets == [0, 2]


def test_add_facility_room_in_invalid_row(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.flourish_api.pages = [[package("P9", ROOM, sku=None)]]

    created = add_facility(session, vault, upstreams, tenant)

    assert created.id is not None


def test_add_facility_unknown_facility_id(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.flourish_api.facility_error = UpstreamRejected("Not found", status=404)

    with pytest.raises(ops.CheckFailed) as failure:
        add_facility(session, vault, upstreams, tenant)

    assert "facility '58b9b09d280e20ea24a126bb' not found" in failure.value.problems[0]
    assert count(session, Facility) == 0


def test_add_facility_rejected_flourish_key(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.flourish_api.facility_error = CredentialsRejected("bad key", status=401)

    with pytest.raises(ops.CheckFailed) as failure:
        add_facility(session, vault, upstreams, tenant)

    assert "Flourish rejected the API key" in failure.value.problems[0]
    assert count(session, Facility) == 0


def test_add_facility_missing_room_lists_rooms(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.CheckFailed) as failure:
        add_facility(session, vault, upstreams, tenant, wholesale_room="Front Office")

    problem = failure.value.problems[0]
    assert "Room 'Front Office' not found" in problem
    assert "'Back Room'" in problem
    assert count(session, Facility) == 0


def test_add_facility_room_case_suggests_spelling(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.CheckFailed, match="Did you mean 'Wholesale Vault'"):
        add_facility(
            session, vault, upstreams, tenant, wholesale_room="wholesale vault"
        )


def test_add_facility_room_scan_stops_on_empty_page(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.flourish_api.pages = [[package("P1", "Back Room")], []]

    with pytest.raises(ops.CheckFailed, match="not found"):
        add_facility(session, vault, upstreams, tenant)

    assert upstreams.flourish_api.offsets == [0, 1]


def test_add_facility_unknown_operation(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.CheckFailed) as failure:
        add_facility(session, vault, upstreams, tenant, apex_operation_id=99)

    problem = failure.value.problems[0]
    assert "Apex operation 99 not found" in problem
    assert "11 (Main Cultivation)" in problem


def test_add_facility_disabled_operation(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.CheckFailed, match=r"12 \(Old Site\) is disabled"):
        add_facility(session, vault, upstreams, tenant, apex_operation_id=12)


def test_add_facility_operations_forbidden(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    upstreams.apex_api.operations_error = CredentialsRejected("forbidden", status=403)

    with pytest.raises(ops.CheckFailed, match="view:company"):
        add_facility(session, vault, upstreams, tenant)


def test_add_facility_reports_every_problem(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.CheckFailed) as failure:
        add_facility(
            session,
            vault,
            upstreams,
            tenant,
            wholesale_room="Nowhere",
            apex_operation_id=99,
        )

    problems = failure.value.problems
    assert len(problems) == 2
    assert "Room 'Nowhere'" in problems[0]
    assert "operation 99" in problems[1]


def test_add_facility_rejects_duplicate_facility_id(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    with pytest.raises(ops.InvalidSetting, match="already set up as 'Cultivation'"):
        add_facility(session, vault, upstreams, facility.tenant, name="Other")


def test_add_facility_requires_every_field(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.InvalidSetting, match="wholesale room, Apex operation id"):
        add_facility(
            session,
            vault,
            upstreams,
            tenant,
            wholesale_room=None,
            apex_operation_id=None,
        )


def test_add_facility_rejects_short_interval(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    with pytest.raises(ops.InvalidSetting, match="minimum is 300 s"):
        add_facility(session, vault, upstreams, tenant, sync_interval_seconds=60)


def test_update_facility_interval_skips_checks(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    upstreams.flourish_api.offsets.clear()
    facility.next_sync_at = datetime.now(UTC) + timedelta(hours=4)
    changes = ops.FacilityChanges(sync_interval_seconds=600)

    ops.update_facility(session, vault, upstreams, facility, changes)  # type: ignore[arg-type]

    assert facility.sync_interval_seconds == 600
    assert facility.next_sync_at <= datetime.now(UTC) + timedelta(seconds=600)
    assert upstreams.flourish_api.offsets == []


def test_update_facility_bad_room_keeps_old(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    changes = ops.FacilityChanges(wholesale_room="Nowhere", name="Renamed")

    with pytest.raises(ops.CheckFailed):
        ops.update_facility(session, vault, upstreams, facility, changes)  # type: ignore[arg-type]

    assert facility.wholesale_room == ROOM
    assert facility.name == "Cultivation"


def test_update_facility_new_key_clears_rejection(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    facility.state, facility.state_reason = "credentials_rejected", "401 from Flourish"
    changes = ops.FacilityChanges(flourish_api_key="flourish-key-new")

    ops.update_facility(session, vault, upstreams, facility, changes)  # type: ignore[arg-type]

    assert facility.state == "active"
    assert vault.decrypt(facility.flourish_api_key_encrypted) == "flourish-key-new"
    assert upstreams.keys[-1][0] == "flourish-key-new"


def test_pause_then_resume_facility(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    ops.pause_facility(session, facility, "inventory count")
    paused = (facility.state, facility.state_reason)
    ops.resume_facility(session, vault, upstreams, facility)  # type: ignore[arg-type]

    assert paused == ("paused", "inventory count")
    assert facility.state == "active"
    assert facility.state_reason is None


def test_resume_rejected_facility_rechecks_key(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    facility.state = "credentials_rejected"
    upstreams.flourish_api.facility_error = CredentialsRejected("bad key", status=401)

    with pytest.raises(ops.CheckFailed, match="Flourish rejected the API key"):
        ops.resume_facility(session, vault, upstreams, facility)  # type: ignore[arg-type]

    assert facility.state == "credentials_rejected"


def test_find_facility_ambiguous_name(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    other = add_tenant(session, vault, upstreams)
    add_facility(session, vault, upstreams, other, flourish_facility_id="other-id")

    with pytest.raises(ops.InvalidSetting, match="several tenants"):
        ops.find_facility(session, "Cultivation")
    assert ops.find_facility(session, "Cultivation", other).tenant_id == other.id


# Secrets ---------------------------------------------------------------------


def test_rotate_secrets_uses_first_key(
    session: Session, facility: Facility, vault_key: str
) -> None:
    new_key = Fernet.generate_key().decode()
    rotated = Vault([new_key, vault_key])

    report = ops.rotate_secrets(session, rotated)

    only_new = Vault([new_key])
    assert report == ops.RotationReport(tenants=1, facilities=1)
    assert only_new.decrypt(facility.tenant.apex_token_encrypted) == "apex-token-green"
    assert only_new.decrypt(facility.flourish_api_key_encrypted) == "flourish-key-green"


def test_rotate_secrets_unknown_key_names_record(
    session: Session, tenant: Tenant
) -> None:
    stranger = Vault([Fernet.generate_key().decode()])

    with pytest.raises(SecretKeyError, match=f"tenant {tenant.id}"):
        ops.rotate_secrets(session, stranger)


# Status ----------------------------------------------------------------------


def finished_run(session: Session, facility: Facility, **counts: Any) -> SyncRun:
    now = datetime.now(UTC)
    run = SyncRun(
        tenant_id=facility.tenant_id,
        facility_id=facility.id,
        state="succeeded",
        started_at=now - timedelta(minutes=2),
        finished_at=now,
        **counts,
    )
    session.add(run)
    session.flush()
    return run


def test_status_reports_last_run_counts(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    finished_run(session, facility, fetched=10)
    run = finished_run(session, facility, fetched=50, created=40, unmapped=2)

    (tenant_status,) = ops.collect_status(session)

    (facility_status,) = tenant_status.facilities
    assert facility_status.last_run is not None
    assert facility_status.last_run.id == run.id
    assert facility_status.last_run.created == 40
    assert facility_status.next_sync_at is not None


def test_status_lists_unmapped_skus_of_last_run(
    session: Session, facility: Facility
) -> None:
    run = finished_run(session, facility, unmapped=3)
    for tag, sku, outcome in (
        ("T1", "SKU-B", "unmapped"),
        ("T2", "SKU-A", "unmapped"),
        ("T3", "SKU-A", "unmapped"),
        ("T4", "SKU-C", "created"),
    ):
        session.add(
            PackageOutcome(
                run_id=run.id,
                tenant_id=facility.tenant_id,
                package_tag=tag,
                sku=sku,
                outcome=outcome,
            )
        )
    session.flush()

    (tenant_status,) = ops.collect_status(session)

    assert tenant_status.facilities[0].unmapped_skus == ["SKU-A", "SKU-B"]


def test_status_counts_open_dead_letters(session: Session, facility: Facility) -> None:
    for state in ("open", "open", "discarded"):
        session.add(
            DeadLetter(
                task_name="inventory.create_batches",
                tenant_id=facility.tenant_id,
                facility_id=facility.id,
                exception_type="UpstreamRejected",
                message="422",
                state=state,
            )
        )
    session.flush()

    (tenant_status,) = ops.collect_status(session)

    assert tenant_status.facilities[0].open_dead_letters == 2
    assert tenant_status.open_dead_letters == 2


def test_status_reads_apex_credits(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    (tenant_status,) = ops.collect_status(session, vault=vault, upstreams=upstreams)  # type: ignore[arg-type]

    assert tenant_status.credits.used == 1234
    assert tenant_status.credits.monthly_limit is None
    assert tenant_status.credits.error is None


def test_status_survives_unreachable_apex(
    session: Session, vault: Vault, upstreams: FakeUpstreams, facility: Facility
) -> None:
    upstreams.apex_api.usage_error = UpstreamUnavailable("Apex timed out.")

    (tenant_status,) = ops.collect_status(session, vault=vault, upstreams=upstreams)  # type: ignore[arg-type]

    assert tenant_status.credits.used is None
    assert tenant_status.credits.error == "Apex timed out."
    assert len(tenant_status.facilities) == 1


def test_status_skips_usage_for_rejected_token(
    session: Session, vault: Vault, upstreams: FakeUpstreams, tenant: Tenant
) -> None:
    tenant.apex_state = "credentials_rejected"
    upstreams.apex_api.calls.clear()

    (tenant_status,) = ops.collect_status(session, vault=vault, upstreams=upstreams)  # type: ignore[arg-type]

    assert upstreams.apex_api.calls == []
    assert tenant_status.credits.error is not None
