"""Retries inside the page chain ``fetch_packages → convert_units → create_batches``.

A link that retries must hand its result to the next link once, after it
succeeded. A link that runs out of retries must stop the chain, leave one
dead letter and fail the run with the reason. The stored Celery results
(``result_extended``) show which links ran, how often and in what order.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared.models import Facility
from shared.secrets import Vault
from shared.settings import get_settings
from tests.faults_support import (
    check_facility,
    dead_letters,
    run_row,
    set_faults,
    task_results,
)
from tests.helpers import sandbox_json, start_sync, wait_for_run


def results_of(redis_url: str, name: str) -> list[dict[str, Any]]:
    return [meta for meta in task_results(redis_url) if meta.get("name") == name]


def page_of(meta: dict[str, Any]) -> tuple[str, int]:
    """Return the (phase, offset) a chain link worked on."""
    if meta["name"] == "inventory.fetch_packages":
        return meta["kwargs"]["phase"], meta["kwargs"]["offset"]
    page = meta["args"][0]
    return page["phase"], page["offset"]


def flourish_package_reads(sandbox: Any) -> int:
    stats = sandbox_json(sandbox, "/_sandbox/stats")["flourish"]
    return int(stats["per_path"].get("GET /v1/packages", 0))


@pytest.mark.processes
def test_retried_fetch_feeds_next_once(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    lose = {"method": "GET", "path_contains": "/v1/packages", "count": 2}
    set_faults(service.sandbox, flourish={"lose_response": [lose]})
    service.start_worker(queues="inventory")
    redis_url = service.variables["APEXSYNC_REDIS_URL"]

    state = wait_for_run(start_sync(facility_id), 180)

    fetches = results_of(redis_url, "inventory.fetch_packages")
    converts = results_of(redis_url, "inventory.convert_units")
    [first_fetch] = [meta for meta in fetches if page_of(meta) == ("delta", 0)]
    [first_convert] = [meta for meta in converts if page_of(meta) == ("delta", 0)]
    assert state == "succeeded"
    assert first_fetch["status"] == "SUCCESS"
    assert first_fetch["retries"] == 2
    assert first_convert["status"] == "SUCCESS"
    assert first_convert["date_done"] >= first_fetch["date_done"]


@pytest.mark.processes
def test_every_page_link_runs_once(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    lose = {"method": "GET", "path_contains": "/v1/packages", "count": 2}
    set_faults(service.sandbox, flourish={"lose_response": [lose]})
    service.start_worker(queues="inventory")
    redis_url = service.variables["APEXSYNC_REDIS_URL"]

    state = wait_for_run(start_sync(facility_id), 180)

    pages = {
        name: sorted(page_of(meta) for meta in results_of(redis_url, name))
        for name in (
            "inventory.fetch_packages",
            "inventory.convert_units",
            "inventory.create_batches",
        )
    }
    assert state == "succeeded"
    assert len(pages["inventory.fetch_packages"]) >= 2
    assert pages["inventory.convert_units"] == pages["inventory.fetch_packages"]
    assert pages["inventory.create_batches"] == pages["inventory.fetch_packages"]
    assert len(set(pages["inventory.fetch_packages"])) == len(
        pages["inventory.fetch_packages"]
    )


@pytest.mark.processes
def test_lost_batch_response_retried_once(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    lose = {"method": "POST", "path_contains": "/v2/batches", "count": 1}
    set_faults(service.sandbox, apex={"lose_response": [lose]})
    service.start_worker(queues="inventory")
    redis_url = service.variables["APEXSYNC_REDIS_URL"]

    state = wait_for_run(start_sync(facility_id), 180)

    creates = results_of(redis_url, "inventory.create_batches")
    [first_create] = [meta for meta in creates if page_of(meta) == ("delta", 0)]
    second_fetches = [
        meta
        for meta in results_of(redis_url, "inventory.fetch_packages")
        if page_of(meta) == ("delta", 50)
    ]
    check = check_facility(service.sandbox, facility_id)
    assert state == "succeeded"
    assert first_create["retries"] == 1
    assert len(second_fetches) == 1
    assert second_fetches[0]["date_done"] >= first_create["date_done"]
    assert check.duplicates == []
    assert check.missing == []
    assert check.open_intents == []


@pytest.mark.processes
def test_exhausted_link_stops_chain(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    set_faults(
        service.sandbox,
        flourish={"error_rate": 1.0, "path_contains": "/v1/packages"},
    )
    worker = service.start_worker(
        queues="inventory",
        extra={"APEXSYNC_TASK_MAX_RETRIES": "2", "APEXSYNC_MAX_RETRY_COUNTDOWN": "1"},
    )
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    run_id = start_sync(facility_id)

    state = wait_for_run(run_id, 120)

    run = run_row(run_id)
    letters = dead_letters()
    # Celery stores FAILURE for the links after a failed one without running them.
    later_links = [
        meta
        for name in ("inventory.convert_units", "inventory.create_batches")
        for meta in results_of(redis_url, name)
    ]
    apex_paths = sandbox_json(service.sandbox, "/_sandbox/stats")["apex"]["per_path"]
    assert state == "failed"
    assert "inventory.fetch_packages gave up" in (run.error or "")
    assert "500" in (run.error or "")
    assert len(letters) == 1
    assert letters[0].task_name == "inventory.fetch_packages"
    assert letters[0].attempts == 3
    assert [meta["status"] for meta in later_links] == ["FAILURE", "FAILURE"]
    assert "inventory.convert_units[" not in worker.log()
    assert "inventory.create_batches[" not in worker.log()
    assert "POST /v2/batches" not in apex_paths
    assert flourish_package_reads(service.sandbox) == 3


@pytest.mark.processes
def test_dead_letter_has_context_no_secret(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    set_faults(
        service.sandbox,
        flourish={"error_rate": 1.0, "path_contains": "/v1/packages"},
    )
    service.start_worker(
        queues="inventory",
        extra={"APEXSYNC_TASK_MAX_RETRIES": "1", "APEXSYNC_MAX_RETRY_COUNTDOWN": "1"},
    )
    run_id = start_sync(facility_id)
    wait_for_run(run_id, 120)

    [letter] = dead_letters()
    run = run_row(run_id)
    api_key = facility_api_key(facility_id)
    stored = " ".join(
        str(value)
        for value in (
            letter.arguments,
            letter.message,
            letter.traceback,
            letter.request_excerpt,
            letter.response_excerpt,
        )
    )
    assert letter.exception_type == "UpstreamUnavailable"
    assert letter.upstream_status == 500
    assert letter.tenant_id == run.tenant_id
    assert letter.facility_id == facility_id
    assert letter.arguments["run_id"] == run_id
    assert letter.arguments["chain"]
    assert "GET /v1/packages" in letter.message
    assert letter.response_excerpt
    assert letter.traceback
    assert letter.first_failed_at is not None
    assert letter.last_failed_at >= letter.first_failed_at
    assert letter.state == "open"
    assert api_key not in stored


def facility_api_key(facility_id: int) -> str:
    from shared.db import session_scope

    with session_scope() as session:
        encrypted = session.get(Facility, facility_id).flourish_api_key_encrypted
    return Vault.from_settings(get_settings()).decrypt(encrypted)
