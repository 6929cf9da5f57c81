"""The ``apexsync orders`` and ``apexsync buyers`` commands against a real database.

Publishing is replaced by a recorder, so these tests need no broker; the
task tests run the pushes themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from shared.db import session_scope
from shared.models import BuyerLink, OrderLink, OrderPush, Tenant
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import reset_caches
from workers.cli_buyers import buyers_app
from workers.cli_orders import orders_app

runner = CliRunner()


@pytest.fixture
def database(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("APEXSYNC_ENVIRONMENT", "test")
    monkeypatch.setenv("APEXSYNC_DATABASE_URL", clean_db)
    monkeypatch.setenv("APEXSYNC_SECRET_KEY", TEST_SECRET_KEY)
    # Wide enough that rich tables do not wrap the cells the tests look for.
    monkeypatch.setenv("COLUMNS", "250")
    reset_caches()
    with session_scope() as session:
        session.add(Tenant(id=1, name="Green Valley Farms", apex_token_encrypted="x"))
    yield clean_db
    monkeypatch.delenv("APEXSYNC_DATABASE_URL")
    reset_caches()


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Push ids the commands publish, recorded instead of sent to a broker."""
    sent: list[int] = []
    monkeypatch.setattr("tasks.orders.publish_push", lambda push: sent.append(push.id))
    return sent


def add_second_tenant() -> None:
    with session_scope() as session:
        session.add(Tenant(id=2, name="Coastal Cultivators", apex_token_encrypted="y"))


def add_pushed_order(state: str = "pushed", apex_order_id: int = 100123) -> None:
    with session_scope() as session:
        session.add(
            OrderLink(
                tenant_id=1,
                apex_order_id=apex_order_id,
                invoice_number=f"GVF-{apex_order_id}",
                flourish_order_id="00000042",
                state=state,
                reason="stock is allocated" if state == "failed" else None,
                pushed_payload={
                    "order_lines": [
                        {
                            "sku": "BD-BULK",
                            "item_id": "160",
                            "order_qty": 907.1847,
                            "unit_price": 3.9683,
                        }
                    ]
                },
            )
        )
        session.add(
            OrderPush(
                tenant_id=1,
                apex_order_id=apex_order_id,
                state="created",
                trigger="poll",
                flourish_order_id="00000042",
            )
        )


def finish_pushes(state: str) -> Any:
    """A publisher that ends each push at once with ``state``."""

    def publish(push: OrderPush) -> None:
        with session_scope() as session:
            row = session.get(OrderPush, push.id)
            row.state = state
            row.reason = f"ended as {state}"
            row.flourish_order_id = "00000042" if state == "created" else None

    return publish


# --- orders ----------------------------------------------------------------


def test_orders_list_json(database: str) -> None:
    add_pushed_order()

    result = runner.invoke(orders_app, ["list", "--json"])

    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["apex_order_id"] for row in rows] == [100123]
    assert rows[0]["flourish_order_id"] == "00000042"


def test_orders_list_filters_state(database: str) -> None:
    add_pushed_order()
    add_pushed_order(state="failed", apex_order_id=100124)

    result = runner.invoke(orders_app, ["list", "--state", "failed", "--json"])

    assert [row["apex_order_id"] for row in json.loads(result.stdout)] == [100124]


def test_orders_list_table(database: str) -> None:
    add_pushed_order()

    result = runner.invoke(orders_app, ["list"])

    assert result.exit_code == 0
    assert "100123" in result.stdout
    assert "00000042" in result.stdout


def test_orders_show_by_invoice(database: str) -> None:
    add_pushed_order()

    result = runner.invoke(orders_app, ["show", "GVF-100123", "--json"])

    details = json.loads(result.stdout)
    assert result.exit_code == 0
    assert details["link"]["flourish_order_id"] == "00000042"
    assert details["lines"][0]["sku"] == "BD-BULK"
    assert details["pushes"][0]["state"] == "created"


def test_orders_show_table(database: str) -> None:
    add_pushed_order(state="failed")

    result = runner.invoke(orders_app, ["show", "100123"])

    assert result.exit_code == 0
    assert "stock is allocated" in result.stdout
    assert "BD-BULK" in result.stdout


def test_orders_show_unknown_fails(database: str) -> None:
    result = runner.invoke(orders_app, ["show", "555"])

    assert result.exit_code == 1
    assert "has never been pushed" in result.stderr


def test_orders_push_queues_push(database: str, published: list[int]) -> None:
    result = runner.invoke(orders_app, ["push", "100123", "--json"])

    push_id = json.loads(result.stdout)["push_id"]
    assert result.exit_code == 0
    assert published == [push_id]
    with session_scope() as session:
        push = session.get(OrderPush, push_id)
        assert push.trigger == "manual"
        assert push.state == "queued"
        assert push.deadline_at is not None


def test_orders_push_twice_reuses_queued(database: str, published: list[int]) -> None:
    first = runner.invoke(orders_app, ["push", "100123", "--json"])
    second = runner.invoke(orders_app, ["push", "100123", "--json"])

    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert len(published) == 1


def test_orders_push_wait_success(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.orders.publish_push", finish_pushes("created"))

    result = runner.invoke(orders_app, ["push", "100123", "--wait"])

    assert result.exit_code == 0
    assert "created → Flourish order 00000042" in result.stdout


def test_orders_push_wait_refused_exits_one(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.orders.publish_push", finish_pushes("refused"))

    result = runner.invoke(orders_app, ["push", "100123", "--wait", "--json"])

    assert result.exit_code == 1
    assert json.loads(result.stdout)["state"] == "refused"


def test_orders_push_needs_tenant_when_several(
    database: str, published: list[int]
) -> None:
    add_second_tenant()

    result = runner.invoke(orders_app, ["push", "100123"])

    assert result.exit_code == 1
    assert "pass --tenant" in result.stderr
    assert published == []


def test_orders_push_tenant_by_name(database: str, published: list[int]) -> None:
    add_second_tenant()

    result = runner.invoke(orders_app, ["push", "7", "--tenant", "Coastal Cultivators"])

    assert result.exit_code == 0
    with session_scope() as session:
        push = session.scalars(select(OrderPush)).one()
        assert push.tenant_id == 2


def test_orders_push_unknown_tenant_fails(database: str, published: list[int]) -> None:
    result = runner.invoke(orders_app, ["push", "7", "--tenant", "Nobody"])

    assert result.exit_code == 1
    assert "Tenant 'Nobody' not found" in result.stderr


# --- buyers ----------------------------------------------------------------


def add_buyer(apex_buyer_id: int, state: str, **fields: Any) -> None:
    with session_scope() as session:
        session.add(
            BuyerLink(
                tenant_id=1,
                apex_buyer_id=apex_buyer_id,
                buyer_name=f"Buyer {apex_buyer_id}",
                state=state,
                **fields,
            )
        )


def test_buyers_list_review_only(database: str) -> None:
    add_buyer(1, "linked", flourish_destination_id="d1")
    candidates = [
        {"destination_id": "d2", "name": "Shop A"},
        {"destination_id": "d3", "name": "Shop B"},
    ]
    add_buyer(2, "review", candidates=candidates, reason="2 destinations share license")

    result = runner.invoke(buyers_app, ["list", "--state", "review", "--json"])

    rows = json.loads(result.stdout)
    assert [row["apex_buyer_id"] for row in rows] == [2]
    assert [c["destination_id"] for c in rows[0]["candidates"]] == ["d2", "d3"]


def test_buyers_list_table_shows_candidates(database: str) -> None:
    add_buyer(2, "review", candidates=[{"destination_id": "d2", "name": "Shop A"}])

    result = runner.invoke(buyers_app, ["list"])

    assert result.exit_code == 0
    assert "d2 (Shop A)" in result.stdout


def test_buyers_list_unknown_state_fails(database: str) -> None:
    result = runner.invoke(buyers_app, ["list", "--state", "maybe"])

    assert result.exit_code == 1
    assert "Unknown state 'maybe'" in result.stderr


def test_buyers_link_by_hand(database: str) -> None:
    add_buyer(2, "review")

    result = runner.invoke(buyers_app, ["link", "2", "d9", "--no-check"])

    assert result.exit_code == 0
    with session_scope() as session:
        link = session.scalars(
            select(BuyerLink).where(BuyerLink.apex_buyer_id == 2)
        ).one()
        assert link.source == "manual"
        assert link.state == "linked"
        assert link.flourish_destination_id == "d9"


def test_buyers_unlink_by_hand(database: str) -> None:
    add_buyer(1, "linked", flourish_destination_id="d1")

    result = runner.invoke(buyers_app, ["unlink", "1"])

    assert result.exit_code == 0
    with session_scope() as session:
        link = session.scalars(
            select(BuyerLink).where(BuyerLink.apex_buyer_id == 1)
        ).one()
        assert link.state == "unlinked"
        assert link.flourish_destination_id is None


def test_buyers_reset_unknown_fails(database: str) -> None:
    result = runner.invoke(buyers_app, ["reset", "404"])

    assert result.exit_code == 1
    assert "has no link to reset" in result.stderr
