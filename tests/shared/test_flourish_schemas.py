"""Tests of shared.flourish.schemas against the vendor's example payloads.

The examples are read unchanged from the ``shared/reference`` folder that
sits beside the project checkout; the tests skip when it is not there.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.flourish.schemas import (
    Destination,
    FlourishFacility,
    InvalidRow,
    Item,
    LabTestResult,
    OutboundOrder,
    PackageRow,
    SalesRep,
    parse_package_row,
)

EXAMPLES = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "reference"
    / "flourish-examples"
)


def _examples(name: str) -> list[dict[str, Any]]:
    """Return the response bodies of one example file, skipping if it is missing."""
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(
            f"vendor example {path} is missing (no shared/ beside the checkout)"
        )
    document = json.loads(path.read_text())
    return [example["response_body"] for example in document["examples"]]


def _data(name: str, index: int = 0) -> Any:
    return _examples(name)[index]["data"]


def test_packages_example_rows_all_valid() -> None:
    rows = [parse_package_row(raw) for raw in _data("packages-get-getpackages.json")]

    assert len(rows) == 3
    assert all(isinstance(row, PackageRow) for row in rows)


def test_packages_example_keeps_text_ids() -> None:
    row = parse_package_row(_data("packages-get-getpackages.json")[2])

    assert isinstance(row, PackageRow)
    assert row.package_id == "20171215-003"
    assert row.item_id == "1"
    assert row.lab_test_result_id == "1"
    assert row.uom == "ea"
    assert row.unit_weight == Decimal("14")
    assert row.area_name == "Inventory Room 001"


def test_package_example_is_one_element_list() -> None:
    data = _data("packages-get-getpackage.json")

    assert isinstance(data, list)
    row = parse_package_row(data[0])
    assert isinstance(row, PackageRow)
    assert row.qty == Decimal("1")
    assert row.available_qty == Decimal("0")


def test_package_row_without_sku_invalid() -> None:
    raw = dict(_data("packages-get-getpackages.json")[0], sku="")

    result = parse_package_row(raw)

    assert isinstance(result, InvalidRow)
    assert result.package_tag == "20171215-001"
    assert "sku" in result.reason
    assert result.raw is raw


def test_package_row_non_numeric_qty_invalid() -> None:
    raw = dict(_data("packages-get-getpackages.json")[0], available_qty="12,5 g")

    result = parse_package_row(raw)

    assert isinstance(result, InvalidRow)
    assert "available_qty" in result.reason
    assert "'12,5 g'" in result.reason


def test_package_row_unknown_uom_invalid() -> None:
    raw = dict(_data("packages-get-getpackages.json")[0], uom="bag")

    result = parse_package_row(raw)

    assert isinstance(result, InvalidRow)
    assert "'bag'" in result.reason


def test_package_row_numbers_as_strings() -> None:
    raw = dict(
        _data("packages-get-getpackages.json")[0], qty="1015.4999", available_qty=" 3 "
    )

    row = parse_package_row(raw)

    assert isinstance(row, PackageRow)
    assert row.qty == Decimal("1015.4999")
    assert row.available_qty == Decimal("3")


def test_package_row_lock_code_allows_order() -> None:
    raw = dict(
        _data("packages-get-getpackages.json")[0],
        is_locked=True,
        lock_code={"name": "QA", "can_add_to_outbound_order": True},
    )

    row = parse_package_row(raw)

    assert isinstance(row, PackageRow)
    assert row.can_add_to_outbound_order


def test_lab_test_result_v2_example() -> None:
    result = LabTestResult.model_validate(
        _data("lab-test-results-get-getlabtestresult-v2.json")
    )

    assert result.lab_test_result_id == "1118"
    assert result.cannabinoids() == {"thc": Decimal("20")}
    assert result.terpenes() == {}
    assert result.expiration_date is None
    assert result.is_final is True


def test_lab_test_result_collects_terpenes() -> None:
    raw = dict(
        _data("lab-test-results-get-getlabtestresult-v2.json"),
        cbd_percentage="0.45",
        limonene_percentage=0.8,
        myrcene_percentage="ND",
        moisture_percentage=11,
    )

    result = LabTestResult.model_validate(raw)

    assert result.cannabinoids() == {"thc": Decimal("20"), "cbd": Decimal("0.45")}
    assert result.terpenes() == {"limonene": Decimal("0.8")}


def test_facility_example() -> None:
    facility = FlourishFacility.model_validate(_data("facilities-get-getfacility.json"))

    assert facility.id == "58b9b09d280e20ea24a126bb"
    assert facility.sales_rep_required_for_outbound is True


def test_facilities_example() -> None:
    facilities = [
        FlourishFacility.model_validate(row)
        for row in _data("facilities-get-getfacilities.json")
    ]

    assert [facility.license_number for facility in facilities] == ["12345", None]


def test_destinations_example() -> None:
    rows = _data("destinations-get-getdestinations.json")

    destinations = [Destination.model_validate(row) for row in rows]

    assert destinations[1].license_number == "ccvvbb67"
    assert destinations[0].total_open_balance == Decimal("3977677.44")


def test_destination_example_contacts() -> None:
    destination = Destination.model_validate(
        _data("destinations-get-getdestination.json")
    )

    assert destination.contacts is not None
    assert destination.contacts[0].email == "user3@example.com"
    assert destination.contacts[0].is_primary is True


def test_items_examples() -> None:
    for body in _examples("items-get-getitems.json"):
        items = [Item.model_validate(row) for row in body["data"]]

        assert all(isinstance(item.id, str) for item in items)

    first = Item.model_validate(_data("items-get-getitems.json")[0])
    assert first.sku == "1.3.33.2.0"
    assert first.unit_weight == Decimal("0.5")


def test_sales_reps_example() -> None:
    reps = [
        SalesRep.model_validate(row)
        for row in _data("outbound-orders-get-getsalesreps.json")
    ]

    assert [rep.sales_rep_id for rep in reps] == [1, 7, 8, 11, 16]


def test_outbound_order_get_example() -> None:
    order = OutboundOrder.model_validate(
        _data("outbound-orders-get-getoutboundorder.json")
    )

    assert order.id == "00013742"
    assert order.invoice_date is None
    assert order.requested_delivery_date is None
    assert order.sales_rep is not None
    assert order.sales_rep.id == "0"
    assert order.order_lines[0].order_line_dtls is not None
    assert order.has_allocations


def test_outbound_orders_list_example() -> None:
    rows = _data("outbound-orders-get-getoutboundorders.json")

    orders = [OutboundOrder.model_validate(row) for row in rows]

    assert orders[0].id == "00000044"
    assert all(order.id and order.id.isdigit() for order in orders)


def test_outbound_order_post_examples() -> None:
    for body in _examples("outbound-orders-post-postoutboundorder.json"):
        order = OutboundOrder.model_validate(body)

        assert order.original_order_id == "STRING"
        assert order.invoice_date == date(2023, 12, 10)
        assert order.order_lines[0].item_variation_pk == "69"


def test_outbound_order_put_examples() -> None:
    for body in _examples("outbound-orders-put-putoutboundorder.json"):
        order = OutboundOrder.model_validate(body["data"])

        assert order.id == "00005419"
        assert order.order_lines[0].item_variation_pk == "69"
        assert order.destination is not None
        assert order.destination.external_id == "1234"
        assert not order.has_allocations


def test_package_row_numeric_text_fields() -> None:
    raw = dict(_data("packages-get-getpackages.json")[0], sku=1234, lot_number=20240101)

    row = parse_package_row(raw)

    assert isinstance(row, PackageRow)
    assert row.sku == "1234"
    assert row.lot_number == "20240101"
