"""The sync and runs commands of the CLI against real services."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from workers.cli import app

pytestmark = [pytest.mark.processes]

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_sync_inventory_wait_prints_counts(service: Any) -> None:
    service.start_worker(concurrency=2)
    service.register_tenants()

    result = invoke("sync", "inventory", "GVF Cultivation", "--wait", "--json")

    assert result.exit_code == 0, result.output
    details = json.loads(result.output[result.output.index("{") :])
    assert details["state"] == "succeeded"
    assert details["created"] > 0
    assert details["unmapped_skus"]
    assert details["skipped_by_reason"]


def test_runs_show_lists_reasons_and_skus(service: Any) -> None:
    service.start_worker(concurrency=2)
    service.register_tenants()
    invoke("sync", "inventory", "GVF Processing", "--wait")

    listing = invoke("runs", "list", "--json")
    run_id = json.loads(listing.output)[0]["id"]
    shown = invoke("runs", "show", str(run_id))

    assert listing.exit_code == 0
    assert shown.exit_code == 0
    assert "Unmapped SKUs" in shown.output
    assert "not in the wholesale room" in shown.output


def test_sync_unknown_facility_fails_clearly(service: Any) -> None:
    result = runner.invoke(app, ["sync", "inventory", "No Such Place"])

    assert result.exit_code == 1
    assert "No Such Place" in result.output
    assert "apexsync facilities list" in result.output


def test_sync_while_running_names_the_run(service: Any) -> None:
    service.register_tenants()
    first = invoke("sync", "inventory", "Coastal Main", "--json")
    run_id = json.loads(first.output)["run_id"]

    second = runner.invoke(app, ["sync", "inventory", "Coastal Main"])

    assert second.exit_code == 1
    assert f"run {run_id}" in second.output
