"""The simulated Flourish API through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.app import create_app
from sandbox.state import SandboxState

BASE = "/flourish/external/api"


@dataclass
class Flourish:
    client: TestClient
    state: SandboxState
    facility: dict[str, Any]
    other_facility: dict[str, Any]

    def headers(self, facility: dict[str, Any] | None = None) -> dict[str, str]:
        facility = facility or self.facility
        return {
            "x-api-key": facility["flourish_api_key"],
            "FacilityID": facility["flourish_facility_id"],
        }

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(BASE + path, params=params, headers=self.headers())


@pytest.fixture
def flourish() -> Iterator[Flourish]:
    state = SandboxState.seeded(packages=180)
    tenants = state.seed_summary()["tenants"]
    with TestClient(create_app(state)) as client:
        yield Flourish(
            client, state, tenants[0]["facilities"][0], tenants[1]["facilities"][0]
        )


def test_missing_api_key_is_unauthorized(flourish: Flourish) -> None:
    response = flourish.client.get(BASE + "/v1/items")

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized", "status": 401}


def test_wrong_api_key_is_unauthorized(flourish: Flourish) -> None:
    response = flourish.client.get(BASE + "/v1/items", headers={"x-api-key": "nope"})

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized", "status": 401}


def test_packages_require_facility_header(flourish: Flourish) -> None:
    headers = {"x-api-key": flourish.facility["flourish_api_key"]}

    response = flourish.client.get(BASE + "/v1/packages", headers=headers)

    assert response.status_code == 400
    assert "FacilityID" in response.json()["message"]


def test_foreign_facility_is_forbidden(flourish: Flourish) -> None:
    headers = flourish.headers()
    headers["FacilityID"] = flourish.other_facility["flourish_facility_id"]

    response = flourish.client.get(BASE + "/v1/packages", headers=headers)

    assert response.status_code == 403
    assert response.json()["status"] == 403


def test_limit_above_50_is_rejected(flourish: Flourish) -> None:
    response = flourish.get("/v1/packages", limit=51)

    assert response.status_code == 400
    assert "50" in response.json()["message"]


def test_packages_envelope_and_meta(flourish: Flourish) -> None:
    body = flourish.get("/v1/packages", limit=10).json()

    assert body["message"] == "Success"
    assert body["status"] == 200
    assert body["meta"]["offset"] == 0
    assert body["meta"]["limit"] == 10
    assert body["meta"]["count"] == 10
    assert body["meta"]["total"] > 10
    assert "offset=10" in body["meta"]["next"]


def test_last_page_has_empty_next(flourish: Flourish) -> None:
    total = flourish.get("/v1/packages", limit=1).json()["meta"]["total"]

    body = flourish.get("/v1/packages", offset=total - 5, limit=50).json()

    assert body["meta"]["count"] == 5
    assert body["meta"]["next"] == ""


def test_paging_visits_every_package_once(flourish: Flourish) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        body = flourish.get("/v1/packages", offset=offset, limit=50).json()
        seen += [row["package_id"] for row in body["data"]]
        if not body["meta"]["next"]:
            break
        offset += 50

    assert len(seen) == body["meta"]["total"]
    assert len(set(seen)) == len(seen)


def test_package_row_has_vendor_fields(flourish: Flourish) -> None:
    row = flourish.get("/v1/packages", limit=1).json()["data"][0]

    for field in (
        "package_id",
        "sku",
        "item_id",
        "qty",
        "available_qty",
        "uom",
        "area_id",
        "area_name",
        "is_locked",
        "lock_code",
        "lab_test_result_id",
        "production_date",
        "harvest_date",
        "last_updated_timestamp",
    ):
        assert field in row, field
    assert not any(key.startswith("_") for key in row)


def test_package_filter_by_id(flourish: Flourish) -> None:
    first, second = flourish.get("/v1/packages", limit=2).json()["data"]

    body = flourish.get("/v1/packages", package_id=[second["package_id"]]).json()

    assert [row["package_id"] for row in body["data"]] == [second["package_id"]]
    assert first["package_id"] != second["package_id"]


def test_package_filter_by_status(flourish: Flourish) -> None:
    body = flourish.get("/v1/packages", package_status="Assigned to order").json()

    assert body["meta"]["total"] > 0
    assert {row["package_status"] for row in body["data"]} == {"Assigned to order"}


def test_package_filter_by_updated_since(flourish: Flourish) -> None:
    rows = flourish.get("/v1/packages", limit=50).json()["data"]
    cutoff = sorted(row["last_updated_timestamp"] for row in rows)[25]

    body = flourish.get("/v1/packages", last_updated_timestamp_start=cutoff).json()

    assert all(row["last_updated_timestamp"] >= cutoff for row in body["data"])
    assert 0 < body["meta"]["total"] < 180


def test_patched_package_is_seen_as_updated(flourish: Flourish) -> None:
    row = flourish.get("/v1/packages", limit=1).json()["data"][0]
    newest = max(
        r["last_updated_timestamp"] for r in flourish.get("/v1/packages").json()["data"]
    )

    flourish.client.patch(
        f"/_sandbox/flourish/packages/{row['package_id']}", json={"available_qty": 1}
    )
    body = flourish.get("/v1/packages", last_updated_timestamp_start=newest).json()

    assert row["package_id"] in {r["package_id"] for r in body["data"]}


def test_single_package_is_one_element_array(flourish: Flourish) -> None:
    row = flourish.get("/v1/packages", limit=1).json()["data"][0]

    body = flourish.get(f"/v1/packages/{row['package_id']}").json()

    assert isinstance(body["data"], list)
    assert body["data"][0]["package_id"] == row["package_id"]


def test_lab_result_v2_has_percentages(flourish: Flourish) -> None:
    rows = flourish.get("/v1/packages", limit=50).json()["data"]
    result_id = next(r["lab_test_result_id"] for r in rows if r["lab_test_result_id"])

    data = flourish.get(f"/v2/lab-test-results/{result_id}").json()["data"]

    assert isinstance(result_id, str)
    assert data["lab_test_result_id"] == int(result_id)
    assert data["thc_percentage"] > 0
    assert "myrcene_percentage" in data


def test_items_filter_by_sku(flourish: Flourish) -> None:
    body = flourish.get("/v1/items", sku="GELATO-3.5G").json()

    assert [item["sku"] for item in body["data"]] == ["GELATO-3.5G"]


def test_destinations_filter_by_license(flourish: Flourish) -> None:
    body = flourish.get("/v1/destinations", license_number="C10-0003344-LIC").json()

    assert body["meta"]["total"] == 2


def test_destination_license_filter_ignores_case(flourish: Flourish) -> None:
    body = flourish.get("/v1/destinations", license_number="c10-0000451-lic").json()

    assert [d["name"] for d in body["data"]] == ["Harbor Wellness Collective"]


def test_facility_has_sales_rep_flag(flourish: Flourish) -> None:
    facility_id = flourish.facility["flourish_facility_id"]

    data = flourish.get(f"/v1/facilities/{facility_id}").json()["data"]

    assert data["id"] == facility_id
    assert data["sales_rep_required_for_outbound"] is False
    assert data["license_number"] == flourish.facility["license_number"]


def test_sales_reps_need_facility_header(flourish: Flourish) -> None:
    headers = {"x-api-key": flourish.facility["flourish_api_key"]}

    missing = flourish.client.get(BASE + "/v1/sales-reps", headers=headers)
    listed = flourish.get("/v1/sales-reps").json()

    assert missing.status_code == 400
    assert listed["meta"]["total"] >= 1
