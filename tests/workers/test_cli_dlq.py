"""``apexsync dlq``: list, show, replay and discard, against the real DB and Redis.

Listing, showing and discarding read rows written by ``record_dead_letter``.
The replay tests make a real task give up in a real worker (Flourish returns
500 for every package read), then replay it through the command line.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.db import session_scope
from shared.deadletters import record_dead_letter
from shared.errors import UpstreamRejected
from shared.models import DeadLetter, Facility, OrderPush, utcnow
from shared.runs import create_run
from tests.faults_support import (
    check_facility,
    clear_faults,
    dead_letters,
    run_row,
    set_faults,
)
from tests.helpers import run_state, start_sync, wait_for_run, wait_until
from workers.cli import app

runner = CliRunner()

FAST_GIVE_UP = {"APEXSYNC_TASK_MAX_RETRIES": "1", "APEXSYNC_MAX_RETRY_COUNTDOWN": "1"}


def add_letter(task_id: str, state: str = "open", **arguments: Any) -> int:
    error = UpstreamRejected(
        "Apex POST /v2/batches returned 422 Unprocessable Content: quantity invalid",
        status=422,
        request_excerpt='{"name": "1A4060300100000000000001"}',
        response_excerpt='{"message": "quantity invalid"}',
    )
    with session_scope() as session:
        letter = record_dead_letter(
            session,
            task_name="inventory.sync_package",
            task_id=task_id,
            arguments=arguments,
            error=error,
            traceback_text="Traceback (most recent call last):\n  ...\n",
            attempts=1,
        )
        letter.state = state
        return letter.id


def letter_row(letter_id: int) -> DeadLetter:
    with session_scope() as session:
        letter = session.get(DeadLetter, letter_id)
        session.expunge(letter)
        return letter


@pytest.fixture
def tenants(service: Any) -> list[int]:
    return list(service.register_tenants())


# --- list, show, discard ------------------------------------------------------


def test_list_shows_open_only(tenants: list[int]) -> None:
    open_id = add_letter("task-a", tenant_id=1, facility_id=tenants[0])
    add_letter("task-b", state="discarded", tenant_id=1)

    result = runner.invoke(app, ["dlq", "list", "--json"])

    rows = json.loads(result.stdout)
    assert result.exit_code == 0
    assert [row["id"] for row in rows] == [open_id]
    assert rows[0]["task_name"] == "inventory.sync_package"
    assert rows[0]["upstream_status"] == 422


def test_list_all_includes_closed(tenants: list[int]) -> None:
    add_letter("task-a", tenant_id=1)
    add_letter("task-b", state="discarded", tenant_id=1)

    result = runner.invoke(app, ["dlq", "list", "--all", "--json"])

    assert result.exit_code == 0
    assert [row["state"] for row in json.loads(result.stdout)] == [
        "open",
        "discarded",
    ]


def test_list_filters_by_tenant(tenants: list[int]) -> None:
    add_letter("task-a", tenant_id=1)
    second = add_letter("task-b", tenant_id=2)

    result = runner.invoke(app, ["dlq", "list", "--tenant", "2", "--json"])

    assert result.exit_code == 0
    assert [row["id"] for row in json.loads(result.stdout)] == [second]


def test_list_table_names_error(
    tenants: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_letter("task-a", tenant_id=1)
    monkeypatch.setenv("COLUMNS", "200")

    result = runner.invoke(app, ["dlq", "list"])

    assert result.exit_code == 0
    assert "inventory.sync_package" in result.stdout
    assert "UpstreamRejected" in result.stdout


def test_show_prints_excerpts_and_traceback(tenants: list[int]) -> None:
    letter_id = add_letter("task-a", tenant_id=1, package_tag="1A406")

    text = runner.invoke(app, ["dlq", "show", str(letter_id)])
    data = json.loads(
        runner.invoke(app, ["dlq", "show", str(letter_id), "--json"]).stdout
    )

    assert text.exit_code == 0
    assert "quantity invalid" in text.stdout
    assert "Traceback (most recent call last)" in text.stdout
    assert data["arguments"] == {"tenant_id": 1, "package_tag": "1A406"}
    assert data["request_excerpt"] == '{"name": "1A4060300100000000000001"}'
    assert data["response_excerpt"] == '{"message": "quantity invalid"}'
    assert data["attempts"] == 1


def test_show_unknown_letter_fails(tenants: list[int]) -> None:
    result = runner.invoke(app, ["dlq", "show", "999"])

    assert result.exit_code == 1
    assert "Dead letter 999 not found" in result.stderr


def test_discard_closes_letter(tenants: list[int]) -> None:
    letter_id = add_letter("task-a", tenant_id=1)

    result = runner.invoke(app, ["dlq", "discard", str(letter_id)])
    listed = json.loads(runner.invoke(app, ["dlq", "list", "--json"]).stdout)

    assert result.exit_code == 0
    assert letter_row(letter_id).state == "discarded"
    assert listed == []


def test_replay_discarded_rejected(tenants: list[int]) -> None:
    letter_id = add_letter("task-a", state="discarded", tenant_id=1)

    result = runner.invoke(app, ["dlq", "replay", str(letter_id)])

    assert result.exit_code == 1
    assert "is discarded" in result.stderr
    assert letter_row(letter_id).replay_task_id is None


def test_replay_reopens_failed_push(tenants: list[int]) -> None:
    with session_scope() as session:
        push = OrderPush(
            tenant_id=1,
            apex_order_id=990001,
            state="failed",
            reason="orders.push_order gave up",
            deadline_at=utcnow() - timedelta(minutes=5),
        )
        session.add(push)
        session.flush()
        push_id = push.id
    letter_id = add_letter(
        "task-push", push_id=push_id, tenant_id=1, apex_order_id=990001
    )

    result = runner.invoke(app, ["dlq", "replay", str(letter_id), "--json"])

    output = json.loads(result.stdout)
    with session_scope() as session:
        reopened = session.get(OrderPush, push_id)
        assert reopened.state == "queued"
        assert reopened.reason is None
    assert result.exit_code == 0
    assert output["reopened"] == f"order push {push_id}"
    assert letter_row(letter_id).state == "replayed"


# --- replay through a real worker ---------------------------------------------


@pytest.fixture
def failed_run(service: Any, tenants: list[int]) -> dict[str, Any]:
    """A sync run whose package read gave up; its worker keeps running."""
    facility_id = tenants[0]
    set_faults(
        service.sandbox,
        flourish={"error_rate": 1.0, "path_contains": "/v1/packages"},
    )
    worker = service.start_worker(queues="inventory", extra=FAST_GIVE_UP)
    run_id = start_sync(facility_id)
    assert wait_for_run(run_id, 120) == "failed"
    [letter] = dead_letters()
    return {
        "facility_id": facility_id,
        "run_id": run_id,
        "letter_id": letter.id,
        "worker": worker,
    }


def letter_state_is(letter_id: int, *states: str) -> DeadLetter | None:
    letter = letter_row(letter_id)
    return letter if letter.state in states else None


@pytest.mark.processes
def test_replay_succeeds_and_resolves(service: Any, failed_run: dict[str, Any]) -> None:
    clear_faults(service.sandbox)
    letter_id, run_id = failed_run["letter_id"], failed_run["run_id"]

    result = runner.invoke(app, ["dlq", "replay", str(letter_id), "--json"])
    output = json.loads(result.stdout)
    replayed = letter_row(letter_id)
    state = wait_for_run(run_id, 180)
    resolved = wait_until(
        lambda: letter_state_is(letter_id, "resolved"), 60, "the letter to resolve"
    )

    check = check_facility(service.sandbox, failed_run["facility_id"])
    assert result.exit_code == 0
    assert output["reopened"] == f"sync run {run_id} (running)"
    assert replayed.state in ("replayed", "resolved")
    assert replayed.replay_task_id == output["task_id"]
    assert resolved.replay_task_id == output["task_id"]
    assert state == "succeeded"
    assert run_row(run_id).error is None
    assert check.missing == []
    assert check.duplicates == []
    assert len(dead_letters()) == 1


@pytest.mark.processes
def test_failed_replay_reopens_letter(service: Any, failed_run: dict[str, Any]) -> None:
    letter_id, run_id = failed_run["letter_id"], failed_run["run_id"]

    result = runner.invoke(app, ["dlq", "replay", str(letter_id), "--json"])
    task_id = json.loads(result.stdout)["task_id"]
    wait_until(lambda: run_state(run_id) == "failed", 120, "the replay to fail")
    letter = wait_until(
        lambda: letter_state_is(letter_id, "open"), 60, "the letter to reopen"
    )

    assert result.exit_code == 0
    assert letter.replay_task_id == task_id
    assert letter.attempts == 4
    assert letter.last_failed_at > letter.first_failed_at
    assert len(dead_letters()) == 1


@pytest.mark.processes
def test_replay_rejected_while_run_active(
    service: Any, failed_run: dict[str, Any]
) -> None:
    with session_scope() as session:
        facility = session.get(Facility, failed_run["facility_id"])
        other = create_run(session, facility, "manual", timedelta(minutes=30)).id

    result = runner.invoke(app, ["dlq", "replay", str(failed_run["letter_id"])])

    assert result.exit_code == 1
    assert f"has active run {other}" in result.stderr
    assert letter_row(failed_run["letter_id"]).state == "open"
    assert run_state(failed_run["run_id"]) == "failed"
