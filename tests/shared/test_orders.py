"""Order rules: finality, line mapping, units, fingerprints and the push decisions.

The push tests use small in-memory stand-ins for the two clients, so each
decision (create, adopt, unchanged, update, locked, cancel) is checked
without HTTP; the sandbox tests of the tasks cover the real clients.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from shared.buyers import link_buyer
from shared.errors import (
    InvalidRecord,
    OrderLocked,
    OrderNotFinal,
    UnitMismatch,
    UnlinkedBuyer,
)
from shared.models import (
    Base,
    BatchLink,
    Facility,
    OrderLink,
    OrderPush,
    Tenant,
    utcnow,
)
from shared.orders import (
    SalesRepRequired,
    UnknownBatch,
    build_outbound_order,
    check_final,
    describe_changes,
    fingerprint,
    is_allocated,
    is_final,
    map_lines,
    push_order,
    record_attention,
    record_outcome,
)
from shared.units import to_apex_quantity, to_flourish_quantity

GRAMS_PER_POUND = Decimal("453.59237")
DESTINATION = "61bce55cf18c7800067000d4"


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        _seed(session)
        yield session


def _seed(session: Session) -> None:
    session.add(Tenant(id=1, name="Green Valley Farms", apex_token_encrypted="x"))
    session.add(Tenant(id=2, name="Coastal Cultivators", apex_token_encrypted="y"))
    session.flush()
    session.add(_facility(id=10, tenant_id=1, operation=7, name="GVF Cultivation"))
    session.add(_facility(id=11, tenant_id=1, operation=8, name="GVF Processing"))
    session.add(_facility(id=20, tenant_id=2, operation=7, name="Coastal Main"))
    session.flush()
    session.add(_batch_link(tenant_id=1, facility_id=10, batch=901, tag="PKG-1"))
    session.add(
        _batch_link(
            tenant_id=1,
            facility_id=10,
            batch=902,
            tag="PKG-2",
            sku="PR-05",
            item="161",
            uom="ea",
            unit="Unit",
        )
    )
    session.add(_batch_link(tenant_id=1, facility_id=11, batch=903, tag="PKG-3"))
    session.commit()


def _facility(id: int, tenant_id: int, operation: int, name: str) -> Facility:
    return Facility(
        id=id,
        tenant_id=tenant_id,
        name=name,
        flourish_facility_id=f"fac-{id}",
        flourish_api_key_encrypted="k",
        wholesale_room="Wholesale Vault",
        apex_operation_id=operation,
    )


def _batch_link(
    tenant_id: int,
    facility_id: int,
    batch: int,
    tag: str,
    sku: str = "BD-BULK",
    item: str = "160",
    uom: str = "g",
    unit: str = "Pound",
) -> BatchLink:
    return BatchLink(
        tenant_id=tenant_id,
        facility_id=facility_id,
        package_tag=tag,
        sku=sku,
        apex_product_id=55,
        apex_batch_id=batch,
        state="created",
        unit_name=unit,
        flourish_item_id=item,
        flourish_uom=uom,
    )


def tenant(session: Session, tenant_id: int = 1) -> Tenant:
    found = session.get(Tenant, tenant_id)
    assert found is not None
    return found


def facility(session: Session, facility_id: int = 10) -> Facility:
    found = session.get(Facility, facility_id)
    assert found is not None
    return found


def apex_line(**fields: Any) -> dict[str, Any]:
    base = {
        "id": 1,
        "product_id": 55,
        "batch_id": 901,
        "product_name": "Blue Dream Bulk",
        "order_quantity": 2,
        "order_unit_measurement": {"id": 3, "name": "Pound", "alias": "lb"},
        "inventory_quantity": 2,
        "unit_measurement": {"id": 3, "name": "Pound", "alias": "lb"},
        "order_price": "1800.00",
        "order_price_raw": 180000,
    }
    return base | fields


def apex_order(**fields: Any) -> dict[str, Any]:
    base = {
        "id": 100123,
        "invoice_number": "GVF-1042",
        "cancelled": False,
        "order_status": {
            "id": 3121,
            "name": "Invoice Finalized",
            "parent_status": {"id": 2, "name": "Accepted"},
        },
        "operation_id": 7,
        "buyer_id": 4411,
        "buyer_state_license": "402R-00123",
        "order_date": "2025-03-02",
        "created_at": "2025-03-02T18:40:00.000000Z",
        "items": [apex_line()],
    }
    return base | fields


def stage(name: str) -> dict[str, Any]:
    return {"id": 1, "name": f"Custom | {name}", "parent_status": {"name": name}}


# --- finality -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "final"),
    [
        pytest.param(apex_order(), True, id="accepted"),
        pytest.param(
            apex_order(order_status=stage("Pending Shipment")),
            True,
            id="pending-shipment",
        ),
        pytest.param(
            apex_order(order_status=stage("pending shipment")), True, id="stage-case"
        ),
        pytest.param(
            apex_order(order_status=stage("Submitted")), False, id="submitted"
        ),
        pytest.param(
            apex_order(order_status=stage("Delivered")), False, id="delivered"
        ),
        pytest.param(apex_order(cancelled=True), False, id="cancelled"),
        pytest.param(apex_order(cancelled=1), False, id="cancelled-as-one"),
        pytest.param(apex_order(order_status=None), False, id="no-status"),
    ],
)
def test_is_final_default_stages(
    session: Session, order: dict[str, Any], final: bool
) -> None:
    assert is_final(order, tenant(session)) is final


def test_is_final_uses_tenant_stages(session: Session) -> None:
    owner = tenant(session)
    owner.final_order_stages = ["Delivered"]

    assert is_final(apex_order(order_status=stage("Delivered")), owner) is True
    assert is_final(apex_order(), owner) is False


def test_check_final_names_stage(session: Session) -> None:
    with pytest.raises(OrderNotFinal) as caught:
        check_final(apex_order(order_status=stage("Submitted")), tenant(session))

    message = str(caught.value)
    assert "Apex order 100123 (invoice GVF-1042)" in message
    assert "'Submitted'" in message
    assert "Accepted, Pending Shipment" in message


def test_check_final_names_cancellation(session: Session) -> None:
    with pytest.raises(OrderNotFinal) as caught:
        check_final(apex_order(cancelled=True), tenant(session))

    assert "is cancelled" in str(caught.value)


# --- mapping lines --------------------------------------------------------------


def test_map_line_pounds_to_grams(session: Session) -> None:
    [line] = map_lines(session, tenant(session), facility(session), apex_order())

    assert line.sku == "BD-BULK"
    assert line.item_id == "160"
    assert line.quantity == Decimal("907.1847")
    assert line.uom == "g"


def test_map_line_price_per_gram(session: Session) -> None:
    [line] = map_lines(session, tenant(session), facility(session), apex_order())

    # $1,800.00 per pound over 453.59237 g per pound.
    assert line.unit_price == Decimal("3.9683")


def test_map_line_uses_tenant_factor(session: Session) -> None:
    owner = tenant(session)
    owner.grams_per_pound = Decimal("454")

    [line] = map_lines(session, owner, facility(session), apex_order())

    assert line.quantity == Decimal("908.0000")


def test_map_line_case_price_per_base_unit(session: Session) -> None:
    case_line = apex_line(
        batch_id=902,
        order_quantity=3,
        order_unit_measurement={"name": "Case"},
        inventory_quantity=36,
        unit_measurement={"name": "Unit"},
        order_price_raw=6000,
    )

    [line] = map_lines(
        session, tenant(session), facility(session), apex_order(items=[case_line])
    )

    assert line.quantity == Decimal("36")
    # Three cases at $60.00 are $180.00 for 36 units.
    assert line.unit_price == Decimal("5")


def test_map_line_unknown_batch_names_line(session: Session) -> None:
    order = apex_order(items=[apex_line(id=77, batch_id=5555)])

    with pytest.raises(UnknownBatch) as caught:
        map_lines(session, tenant(session), facility(session), order)

    message = str(caught.value)
    assert "Apex order 100123 (invoice GVF-1042) line 77" in message
    assert "batch 5555" in message
    assert caught.value.context["apex_batch_id"] == 5555


def test_map_line_batch_of_other_tenant(session: Session) -> None:
    coastal = tenant(session, 2)

    with pytest.raises(UnknownBatch):
        map_lines(session, coastal, facility(session, 20), apex_order())


def test_map_line_batch_of_other_facility(session: Session) -> None:
    order = apex_order(items=[apex_line(batch_id=903)])

    with pytest.raises(InvalidRecord) as caught:
        map_lines(session, tenant(session), facility(session), order)

    assert "package PKG-3 is in another facility" in str(caught.value)


def test_map_line_unit_mismatch_names_line(session: Session) -> None:
    order = apex_order(items=[apex_line(batch_id=902)])

    with pytest.raises(UnitMismatch) as caught:
        map_lines(session, tenant(session), facility(session), order)

    assert "line 1 (batch 902" in str(caught.value)
    assert "count" in str(caught.value)


def test_map_lines_reports_every_bad_line(session: Session) -> None:
    lines = [
        apex_line(id=1, batch_id=5555),
        apex_line(id=2),
        apex_line(id=3, batch_id=6666),
    ]

    with pytest.raises(UnknownBatch) as caught:
        map_lines(session, tenant(session), facility(session), apex_order(items=lines))

    message = str(caught.value)
    assert "has 2 lines that cannot be pushed" in message
    assert "batch 5555" in message
    assert "batch 6666" in message


def test_map_lines_zero_quantity_rejected(session: Session) -> None:
    order = apex_order(items=[apex_line(inventory_quantity=0)])

    with pytest.raises(InvalidRecord) as caught:
        map_lines(session, tenant(session), facility(session), order)

    assert "no positive inventory_quantity" in str(caught.value)


def test_map_lines_empty_order_rejected(session: Session) -> None:
    with pytest.raises(InvalidRecord):
        map_lines(session, tenant(session), facility(session), apex_order(items=[]))


@given(
    package_grams=st.decimals(
        min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=4
    ),
    share=st.fractions(min_value=0, max_value=1),
    grams_per_pound=st.sampled_from(
        [GRAMS_PER_POUND, Decimal("453.59"), Decimal("454")]
    ),
)
def test_order_never_exceeds_package(
    package_grams: Decimal, share: Any, grams_per_pound: Decimal
) -> None:
    offered = to_apex_quantity(
        package_grams, "g", "Pound", grams_per_pound=grams_per_pound
    )
    ordered = (
        offered * Decimal(share.numerator) / Decimal(share.denominator)
    ).quantize(Decimal("0.0001"), rounding="ROUND_FLOOR")

    taken = to_flourish_quantity(ordered, "Pound", "g", grams_per_pound=grams_per_pound)

    assert taken <= package_grams


# --- body and fingerprint ------------------------------------------------------------


def _body(
    session: Session, order: dict[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    order = order or apex_order()
    lines = map_lines(session, tenant(session), facility(session), order)
    return build_outbound_order(order, lines, destination_id=DESTINATION, **options)


def test_body_header_fields(session: Session) -> None:
    body = _body(session)

    assert body["original_order_id"] == "100123"
    assert body["order_timestamp"] == "2025-03-02T00:00:00.000Z"
    assert body["invoice_date"] == "2025-03-02"
    assert body["destination"] == {"id": DESTINATION}
    assert "sales_rep" not in body


def test_body_lines(session: Session) -> None:
    body = _body(session)

    assert body["order_lines"] == [
        {
            "sku": "BD-BULK",
            "item_id": "160",
            "order_qty": 907.1847,
            "unit_price": 3.9683,
        }
    ]


def test_body_sales_rep_only_id(session: Session) -> None:
    assert _body(session, sales_rep_id=5)["sales_rep"] == {"id": 5}


def test_body_notes_name_invoice(session: Session) -> None:
    note = _body(session)["notes"][0]["note"]

    assert "GVF-1042" in note
    assert "100123" in note


def test_body_split_order_is_own_order(session: Session) -> None:
    body = _body(session, apex_order(id=100124, split_from_order_id=100123))

    assert body["original_order_id"] == "100124"
    assert "Split from Apex order 100123" in body["notes"][0]["note"]


def test_fingerprint_stable_for_same_order(session: Session) -> None:
    assert fingerprint(_body(session)) == fingerprint(_body(session))


def test_fingerprint_ignores_line_order_and_notes(session: Session) -> None:
    body = {
        "original_order_id": "1",
        "destination": {"id": "d"},
        "order_lines": [
            {"sku": "A", "item_id": "1", "order_qty": 2.5, "unit_price": 3},
            {"sku": "B", "item_id": "2", "order_qty": 1, "unit_price": 4},
        ],
        "notes": [{"note": "one"}],
    }
    shuffled = copy.deepcopy(body)
    shuffled["order_lines"].reverse()
    shuffled["notes"] = [{"note": "two"}]
    shuffled["order_lines"][1]["order_qty"] = "2.50"

    assert fingerprint(body) == fingerprint(shuffled)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"destination": {"id": "other"}}, id="destination"),
        pytest.param({"sales_rep": {"id": 9}}, id="sales-rep"),
        pytest.param({"invoice_date": "2025-03-03"}, id="invoice-date"),
    ],
)
def test_fingerprint_changes_with_header(
    session: Session, change: dict[str, Any]
) -> None:
    body = _body(session)

    assert fingerprint(body) != fingerprint(body | change)


def test_fingerprint_changes_with_quantity(session: Session) -> None:
    body = _body(session)
    changed = copy.deepcopy(body)
    changed["order_lines"][0]["order_qty"] = 1.0

    assert fingerprint(body) != fingerprint(changed)


def test_describe_changes_lists_each_kind() -> None:
    old = [
        {"sku": "A", "item_id": "1", "order_qty": 2, "unit_price": 3},
        {"sku": "B", "item_id": "2", "order_qty": 1, "unit_price": 4},
    ]
    new = [
        {"sku": "A", "item_id": "1", "order_qty": 5, "unit_price": 3.5},
        {"sku": "C", "item_id": "3", "order_qty": 1, "unit_price": 4},
    ]

    assert describe_changes(old, new) == [
        "SKU A (item 1): order_qty 2 → 5",
        "SKU A (item 1): unit_price 3 → 3.5",
        "SKU B (item 2): removed, order_qty was 1",
        "SKU C (item 3): added, order_qty 1",
    ]


@pytest.mark.parametrize(
    ("order", "allocated"),
    [
        pytest.param(
            {"order_status": "Created", "order_lines": [{"allocated_qty": None}]},
            False,
            id="created",
        ),
        pytest.param(
            {"order_status": "Created", "order_lines": [{"allocated_qty": 0}]},
            False,
            id="zero",
        ),
        pytest.param(
            {"order_status": "Created", "order_lines": [{"allocated_qty": 2}]},
            True,
            id="allocated-qty",
        ),
        pytest.param(
            {
                "order_status": "Created",
                "order_lines": [{"order_line_dtls": [{"package_id": "P"}]}],
            },
            True,
            id="line-details",
        ),
        pytest.param(
            {"order_status": "Partially Allocated", "order_lines": []},
            True,
            id="status",
        ),
        pytest.param(
            {"order_status": "Shipped", "order_lines": []}, True, id="shipped"
        ),
    ],
)
def test_is_allocated_table(order: dict[str, Any], allocated: bool) -> None:
    assert is_allocated(order) is allocated


# --- pushing ---------------------------------------------------------------------


class FakeApex:
    def __init__(self, *orders: dict[str, Any]) -> None:
        self.orders = {order["id"]: order for order in orders}

    def get_shipping_order(self, order_id: int) -> dict[str, Any]:
        return copy.deepcopy(self.orders[order_id])


class LostResponse(Exception):
    """The write reached Flourish but its response never arrived."""


class FakeFlourish:
    def __init__(self, sales_rep_required: bool = False) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.sales_rep_required = sales_rep_required
        self.sales_reps = [
            {"sales_rep_id": 5, "email": "rep@example.com", "active": True}
        ]
        self.lose_next_create = False

    def get_facility(self, facility_id: str) -> dict[str, Any]:
        self.calls.append("get_facility")
        return {
            "id": facility_id,
            "sales_rep_required_for_outbound": self.sales_rep_required,
        }

    def list_sales_reps(self) -> list[dict[str, Any]]:
        self.calls.append("list_sales_reps")
        return self.sales_reps

    def list_destinations(
        self, *, license_number: str | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append("list_destinations")
        return [
            {
                "id": DESTINATION,
                "license_number": "402R-00123",
                "address_line_1": "1 Main St",
                "city": "Denver",
                "state": "CO",
                "zip_code": "80202",
            }
        ]

    def create_outbound_order(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        order_id = f"{len(self.orders) + 1:08d}"
        lines = [line | {"allocated_qty": None} for line in body["order_lines"]]
        self.orders[order_id] = copy.deepcopy(body) | {
            "id": order_id,
            "order_status": "Created",
            "order_lines": lines,
            "created_at": utcnow(),
        }
        if self.lose_next_create:
            self.lose_next_create = False
            raise LostResponse(order_id)
        return copy.deepcopy(self.orders[order_id])

    def get_outbound_order(self, order_id: str) -> dict[str, Any]:
        self.calls.append("get")
        return copy.deepcopy(self.orders[order_id])

    def list_outbound_orders(
        self, *, created_since: Any = None
    ) -> list[dict[str, Any]]:
        self.calls.append("list")
        return [
            copy.deepcopy(order)
            for order in self.orders.values()
            if created_since is None or order["created_at"] >= created_since
        ]

    def update_outbound_order(
        self, order_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("update")
        self.orders[order_id].update(copy.deepcopy(body))
        return copy.deepcopy(self.orders[order_id])

    def cancel_outbound_order(self, order_id: str) -> dict[str, Any]:
        self.calls.append("cancel")
        self.orders[order_id]["order_status"] = "Cancelled"
        return copy.deepcopy(self.orders[order_id])

    def allocate(self, order_id: str) -> None:
        for line in self.orders[order_id]["order_lines"]:
            line["allocated_qty"] = line["order_qty"]
        self.orders[order_id]["order_status"] = "Allocated"


def push(
    session: Session, apex: FakeApex, flourish: FakeFlourish, order_id: int = 100123
) -> Any:
    return push_order(
        session, tenant(session), apex, lambda _facility: flourish, order_id
    )


def link_of(session: Session, order_id: int = 100123) -> OrderLink:
    found = session.scalars(
        select(OrderLink).where(OrderLink.apex_order_id == order_id)
    ).first()
    assert found is not None
    return found


@pytest.fixture
def linked(session: Session) -> Session:
    link_buyer(session, 1, 4411, DESTINATION)
    session.commit()
    return session


def test_push_creates_flourish_order(linked: Session) -> None:
    flourish = FakeFlourish()

    outcome = push(linked, FakeApex(apex_order()), flourish)

    assert outcome.action == "created"
    assert list(flourish.orders) == ["00000001"]
    assert link_of(linked).flourish_order_id == "00000001"
    assert link_of(linked).state == "pushed"


def test_push_twice_sends_nothing_new(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    flourish.calls.clear()

    outcome = push(linked, apex, flourish)

    assert outcome.action == "unchanged"
    assert "create" not in flourish.calls
    assert "update" not in flourish.calls
    assert "get" not in flourish.calls


def test_push_not_final_refused(linked: Session) -> None:
    flourish = FakeFlourish()

    with pytest.raises(OrderNotFinal):
        push(linked, FakeApex(apex_order(order_status=stage("Submitted"))), flourish)

    assert flourish.calls == []


def test_push_unknown_batch_sends_nothing(linked: Session) -> None:
    flourish = FakeFlourish()
    order = apex_order(items=[apex_line(), apex_line(id=2, batch_id=5555)])

    with pytest.raises(UnknownBatch):
        push(linked, FakeApex(order), flourish)

    assert flourish.orders == {}


def test_push_unlinked_buyer_sends_nothing(session: Session) -> None:
    flourish = FakeFlourish()
    order = apex_order(buyer_state_license="NO-SUCH-LICENSE")
    flourish.list_destinations = lambda **_: []  # type: ignore[method-assign]

    with pytest.raises(UnlinkedBuyer):
        push(session, FakeApex(order), flourish)

    assert flourish.orders == {}


def test_push_matches_buyer_from_order(session: Session) -> None:
    flourish = FakeFlourish()
    order = apex_order(
        ship_line_one="1 Main Street",
        ship_city="Denver",
        ship_state="CO",
        ship_zip="80202",
    )

    outcome = push(session, FakeApex(order), flourish)

    assert outcome.action == "created"
    assert flourish.orders["00000001"]["destination"] == {"id": DESTINATION}


def test_push_adds_required_sales_rep(linked: Session) -> None:
    flourish = FakeFlourish(sales_rep_required=True)

    push(linked, FakeApex(apex_order()), flourish)

    assert flourish.orders["00000001"]["sales_rep"] == {"id": 5}


def test_push_sales_rep_by_email(linked: Session) -> None:
    flourish = FakeFlourish(sales_rep_required=True)
    flourish.sales_reps.append(
        {"sales_rep_id": 6, "email": "Ann@Example.com", "active": True}
    )
    order = apex_order(sales_reps=[{"name": "Ann", "email": "ann@example.com"}])

    push(linked, FakeApex(order), flourish)

    assert flourish.orders["00000001"]["sales_rep"] == {"id": 6}


def test_push_sales_rep_ambiguous_raises(linked: Session) -> None:
    flourish = FakeFlourish(sales_rep_required=True)
    flourish.sales_reps.append(
        {"sales_rep_id": 6, "email": "b@example.com", "active": True}
    )

    with pytest.raises(SalesRepRequired):
        push(linked, FakeApex(apex_order()), flourish)

    assert flourish.orders == {}


def test_push_intent_committed_before_post(linked: Session) -> None:
    flourish = FakeFlourish()
    flourish.lose_next_create = True

    with pytest.raises(LostResponse):
        push(linked, FakeApex(apex_order()), flourish)

    linked.rollback()
    link = link_of(linked)
    assert link.state == "intent"
    assert link.flourish_order_id is None
    assert link.intent_at is not None


def test_push_adopts_order_after_lost_response(linked: Session) -> None:
    flourish = FakeFlourish()
    flourish.lose_next_create = True
    apex = FakeApex(apex_order())
    with pytest.raises(LostResponse):
        push(linked, apex, flourish)

    outcome = push(linked, apex, flourish)

    assert outcome.action == "created"
    assert list(flourish.orders) == ["00000001"]
    assert link_of(linked).flourish_order_id == "00000001"
    assert flourish.calls.count("create") == 1


def test_push_adoption_ignores_old_orders(linked: Session) -> None:
    flourish = FakeFlourish()
    flourish.lose_next_create = True
    apex = FakeApex(apex_order())
    with pytest.raises(LostResponse):
        push(linked, apex, flourish)
    flourish.orders["00000001"]["created_at"] -= timedelta(hours=1)

    push(linked, apex, flourish)

    assert flourish.calls.count("create") == 2


def test_push_adoption_updates_changed_order(linked: Session) -> None:
    flourish = FakeFlourish()
    flourish.lose_next_create = True
    apex = FakeApex(apex_order())
    with pytest.raises(LostResponse):
        push(linked, apex, flourish)
    apex.orders[100123]["items"] = [apex_line(inventory_quantity=1, order_quantity=1)]

    outcome = push(linked, apex, flourish)

    assert outcome.action == "updated"
    assert flourish.orders["00000001"]["order_lines"][0]["order_qty"] == 453.5924
    assert flourish.calls.count("create") == 1


def test_push_changed_order_updates(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    apex.orders[100123]["items"] = [apex_line(inventory_quantity=1, order_quantity=1)]

    outcome = push(linked, apex, flourish)

    assert outcome.action == "updated"
    assert outcome.changes == ["SKU BD-BULK (item 160): order_qty 907.1847 → 453.5924"]
    assert flourish.orders["00000001"]["order_lines"][0]["order_qty"] == 453.5924
    assert list(flourish.orders) == ["00000001"]


def test_push_allocated_order_locked(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    flourish.allocate("00000001")
    apex.orders[100123]["items"].append(
        apex_line(
            id=2,
            batch_id=902,
            unit_measurement={"name": "Unit"},
            inventory_quantity=4,
            order_quantity=4,
            order_unit_measurement={"name": "Unit"},
        )
    )

    with pytest.raises(OrderLocked) as caught:
        push(linked, apex, flourish)

    message = str(caught.value)
    assert "Flourish order 00000001" in message
    assert "Apex order 100123 (invoice GVF-1042)" in message
    assert "SKU PR-05 (item 161): added, order_qty 4" in message
    assert "update" not in flourish.calls


def test_locked_failure_recorded_on_link(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    flourish.allocate("00000001")
    apex.orders[100123]["items"] = [apex_line(inventory_quantity=1, order_quantity=1)]
    attempt = OrderPush(tenant_id=1, apex_order_id=100123)
    linked.add(attempt)

    with pytest.raises(OrderLocked) as caught:
        push(linked, apex, flourish)
    record_attention(linked, attempt, caught.value)

    assert attempt.state == "failed"
    assert attempt.flourish_order_id == "00000001"
    assert link_of(linked).state == "failed"
    assert "stock is allocated" in (link_of(linked).reason or "")


def test_not_final_recorded_as_refused(linked: Session) -> None:
    attempt = OrderPush(tenant_id=1, apex_order_id=100123)
    linked.add(attempt)

    with pytest.raises(OrderNotFinal) as caught:
        push(
            linked,
            FakeApex(apex_order(order_status=stage("Submitted"))),
            FakeFlourish(),
        )
    record_attention(linked, attempt, caught.value)

    assert attempt.state == "refused"
    assert "Submitted" in (attempt.reason or "")


def test_record_outcome_stores_changes(linked: Session) -> None:
    attempt = OrderPush(tenant_id=1, apex_order_id=100123)
    linked.add(attempt)

    record_outcome(
        linked, attempt, push(linked, FakeApex(apex_order()), FakeFlourish())
    )

    assert attempt.state == "created"
    assert attempt.flourish_order_id == "00000001"
    assert attempt.finished_at is not None


def test_push_cancelled_order_cancels(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    apex.orders[100123]["cancelled"] = True

    outcome = push(linked, apex, flourish)

    assert outcome.action == "cancelled"
    assert flourish.orders["00000001"]["order_status"] == "Cancelled"
    assert link_of(linked).state == "cancelled"


def test_push_cancelled_twice_unchanged(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    apex.orders[100123]["cancelled"] = True
    push(linked, apex, flourish)

    outcome = push(linked, apex, flourish)

    assert outcome.action == "unchanged"
    assert flourish.calls.count("cancel") == 1


def test_push_cancelled_never_pushed_refused(linked: Session) -> None:
    flourish = FakeFlourish()

    outcome = push(linked, FakeApex(apex_order(cancelled=True)), flourish)

    assert outcome.action == "refused"
    assert flourish.calls == []


def test_push_cancel_allocated_locked(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    flourish.allocate("00000001")
    apex.orders[100123]["cancelled"] = True

    with pytest.raises(OrderLocked):
        push(linked, apex, flourish)

    assert "cancel" not in flourish.calls


def test_push_uncancelled_order_creates_new(linked: Session) -> None:
    flourish = FakeFlourish()
    apex = FakeApex(apex_order())
    push(linked, apex, flourish)
    apex.orders[100123]["cancelled"] = True
    push(linked, apex, flourish)
    apex.orders[100123]["cancelled"] = False

    outcome = push(linked, apex, flourish)

    assert outcome.action == "created"
    assert outcome.flourish_order_id == "00000002"


def test_push_unknown_operation_raises(linked: Session) -> None:
    with pytest.raises(InvalidRecord) as caught:
        push(linked, FakeApex(apex_order(operation_id=99)), FakeFlourish())

    assert "Apex operation 99" in str(caught.value)


def test_push_reply_without_id_finds_order(linked: Session) -> None:
    flourish = FakeFlourish()
    create = flourish.create_outbound_order
    flourish.create_outbound_order = lambda body: create(body) | {"id": None}  # type: ignore[method-assign]

    outcome = push(linked, FakeApex(apex_order()), flourish)

    assert outcome.flourish_order_id == "00000001"
    assert link_of(linked).flourish_order_id == "00000001"


def test_push_rematches_unmatched_buyer(session: Session) -> None:
    flourish = FakeFlourish()
    order = apex_order(
        ship_line_one="1 Main St", ship_city="Denver", ship_state="CO", ship_zip="80202"
    )
    flourish.list_destinations = lambda **_: []  # type: ignore[method-assign]
    with pytest.raises(UnlinkedBuyer):
        push(session, FakeApex(order), flourish)
    del flourish.list_destinations

    outcome = push(session, FakeApex(order), flourish)

    assert outcome.action == "created"


def test_push_keeps_manual_unlink(linked: Session) -> None:
    from shared.buyers import unlink_buyer

    unlink_buyer(linked, 1, 4411)
    flourish = FakeFlourish()

    with pytest.raises(UnlinkedBuyer) as caught:
        push(linked, FakeApex(apex_order()), flourish)

    assert "state unlinked" in str(caught.value)
    assert "list_destinations" not in flourish.calls


def test_push_sales_rep_of_facility(linked: Session) -> None:
    flourish = FakeFlourish(sales_rep_required=True)
    flourish.sales_reps = [
        {"sales_rep_id": 5, "email": "a@example.com", "facility_id": None},
        {"sales_rep_id": 6, "email": "b@example.com", "facility_id": "fac-10"},
        {
            "sales_rep_id": 7,
            "email": "c@example.com",
            "facility_id": "fac-10",
            "active": False,
        },
    ]

    push(linked, FakeApex(apex_order()), flourish)

    assert flourish.orders["00000001"]["sales_rep"] == {"id": 6}
