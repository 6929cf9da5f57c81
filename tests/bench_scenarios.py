"""Single-facility scenarios: rate-limit use, unchanged cost, overhead, growth.

Each function prepares fresh storage and a fresh sandbox seed for every
repetition, runs real worker processes, and returns plain dicts of figures
that ``tests.bench_report`` turns into BENCHMARKS.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import update

from tests.bench_env import (
    SYNCED_FACILITY,
    UNLIMITED,
    Harness,
    RunResult,
    seed_packages_for,
)
from tests.helpers import PROJECT

logger = logging.getLogger(__name__)

APEX_LIMIT = 15
TENANT = "Green Valley Farms"


def rate_limit_use(
    harness: Harness, packages: int, latency_ms: float, repeats: int
) -> dict[str, Any]:
    """Scenarios 1 and 2: an initial sync at 15 requests per second, then a
    sync with nothing changed, ``repeats`` times on fresh storage."""
    initial, unchanged, stale = [], [], []
    for repeat in range(repeats):
        harness.prepare(
            packages=seed_packages_for(packages),
            rate_limit=APEX_LIMIT,
            latency_ms=latency_ms,
        )
        harness.start_worker(concurrency=2)
        facility_id = harness.facilities[SYNCED_FACILITY]
        initial.append(_initial_at_limit(harness, facility_id))
        unchanged.append(_cost_of_sync(harness, facility_id))
        if repeat == 0:
            _age_taxonomy(harness.facilities[SYNCED_FACILITY])
            stale.append(_cost_of_sync(harness, facility_id))
        harness.stop_workers()
        logger.info("rate limit use %d/%d: %s", repeat + 1, repeats, initial[-1])
    return {
        "packages": packages,
        "latency_ms": latency_ms,
        "repeats": repeats,
        "initial": initial,
        "unchanged": unchanged,
        "unchanged_stale_taxonomy": stale,
        "ratio_median": median(item["ratio_run"] for item in initial),
        "ratio_active_median": median(item["ratio_active"] for item in initial),
    }


def _initial_at_limit(harness: Harness, facility_id: int) -> dict[str, Any]:
    harness.sandbox.clear_counts()
    run = harness.sync(facility_id)
    log = harness.sandbox.requests()
    stats = harness.sandbox.stats()["apex"]
    apex = [item for item in log if item["api"] == "apex"]
    first = min(item["started"] for item in apex)
    last = max(item["ended"] for item in apex)
    late = [
        item for item in apex if item["status"] == 429 and item["started"] > first + 1.0
    ]
    gaps = _idle_gaps(apex)
    return {
        "state": run.state,
        "seconds": run.seconds,
        "created": run.created,
        "lead_seconds": first - run.started_at,
        "tail_seconds": run.finished_at - last,
        "idle_gaps": len(gaps),
        "idle_gap_seconds": sum(gaps),
        "apex_requests": len(apex),
        "flourish_requests": len(log) - len(apex),
        "apex_per_second_run": len(apex) / run.seconds,
        "apex_per_second_active": len(apex) / (last - first),
        "ratio_run": len(apex) / run.seconds / APEX_LIMIT,
        "ratio_active": len(apex) / (last - first) / APEX_LIMIT,
        "status_429": stats["status_429"],
        "status_429_after_first_second": len(late),
        "max_per_second": max(stats["max_per_second"].values(), default=0),
    }


def _idle_gaps(apex: list[dict[str, Any]], threshold: float = 0.2) -> list[float]:
    """Pauses longer than ``threshold`` seconds between one Apex request's
    end and the next one's start."""
    ordered = sorted(apex, key=lambda item: item["started"])
    gaps = [
        later["started"] - earlier["ended"]
        for earlier, later in itertools.pairwise(ordered)
    ]
    return [gap for gap in gaps if gap > threshold]


def _cost_of_sync(harness: Harness, facility_id: int) -> dict[str, Any]:
    """Run one more sync; count requests per API (sandbox stats) and credits."""
    harness.sandbox.clear_counts()
    before = harness.sandbox.credits()[TENANT]["credits_used"]
    run = harness.sync(facility_id)
    stats = harness.sandbox.stats()
    after = harness.sandbox.credits()[TENANT]["credits_used"]
    return {
        "state": run.state,
        "seconds": run.seconds,
        "fetched": run.fetched,
        "apex_requests": stats["apex"]["total"],
        "flourish_requests": stats["flourish"]["total"],
        "apex_paths": stats["apex"]["per_path"],
        "flourish_paths": stats["flourish"]["per_path"],
        "credits": after - before,
    }


def _age_taxonomy(facility_id: int) -> None:
    """Make the tenant's cached taxonomy older than its 24-hour lifetime."""
    from shared.db import session_scope
    from shared.models import ApexTaxonomy, Facility

    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        assert facility is not None
        session.execute(
            update(ApexTaxonomy)
            .where(ApexTaxonomy.tenant_id == facility.tenant_id)
            .values(fetched_at=datetime(2000, 1, 1, tzinfo=UTC))
        )


def pipeline_overhead(harness: Harness, packages: int, repeats: int) -> dict[str, Any]:
    """Scenario 3: the pipeline's wall time against a plain replay of its requests."""
    runs = []
    for repeat in range(repeats):
        harness.prepare(
            packages=seed_packages_for(packages),
            rate_limit=None,
            latency_ms=0,
            extra=UNLIMITED,
        )
        harness.start_worker(concurrency=2)
        harness.sandbox.clear_counts()
        cpu_before = harness.sandbox.cpu_seconds()
        run = harness.sync(harness.facilities[SYNCED_FACILITY])
        cpu_pipeline = harness.sandbox.cpu_seconds() - cpu_before
        log = harness.sandbox.requests(full=True)
        harness.stop_workers()
        replayed = _replay(harness, log, repeat)
        runs.append(_overhead_figures(run, log, replayed, cpu_pipeline))
        logger.info("pipeline overhead %d/%d: %s", repeat + 1, repeats, runs[-1])
    return {
        "packages": packages,
        "repeats": repeats,
        "runs": runs,
        "ratio_median": median(item["ratio"] for item in runs),
        "pipeline_median": median(item["pipeline_seconds"] for item in runs),
        "replay_median": median(item["replay_seconds"] for item in runs),
    }


def _replay(harness: Harness, log: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    path = harness.workdir / f"replay-{repeat}.json"
    path.write_text(json.dumps(log))
    cpu_before = harness.sandbox.cpu_seconds()
    output = subprocess.run(
        [sys.executable, "-m", "tests.bench_replay", str(path), harness.sandbox.url],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    figures = dict(json.loads(output))
    figures["sandbox_cpu"] = harness.sandbox.cpu_seconds() - cpu_before
    return figures


def _overhead_figures(
    run: RunResult,
    log: list[dict[str, Any]],
    replayed: dict[str, Any],
    cpu_pipeline: float,
) -> dict[str, Any]:
    in_requests = sum(item["ended"] - item["started"] for item in log)
    return {
        "state": run.state,
        "pipeline_seconds": run.seconds,
        "replay_seconds": replayed["seconds"],
        "ratio": run.seconds / replayed["seconds"],
        "requests": len(log),
        "pipeline_errors": sum(item["status"] >= 400 for item in log),
        "replay_errors": replayed["errors"],
        "replay_error_samples": replayed["error_samples"],
        "server_seconds": in_requests,
        "sandbox_cpu_pipeline": cpu_pipeline,
        "sandbox_cpu_replay": replayed["sandbox_cpu"],
    }


def growth(
    harness: Harness, sizes: list[int], changed: list[int], memory_size: int
) -> dict[str, Any]:
    """Scenarios 6 and 7: initial syncs of several sizes, then syncs where
    only N packages changed; the worker's peak memory at ``memory_size``."""
    results = []
    memory: dict[str, Any] = {}
    for size in sizes:
        harness.prepare(
            packages=seed_packages_for(size),
            rate_limit=None,
            latency_ms=0,
            extra=UNLIMITED,
        )
        worker = harness.start_worker(concurrency=2)
        facility_id = harness.facilities[SYNCED_FACILITY]
        entry = {"packages": size, "initial": _cost_of_sync(harness, facility_id)}
        if size == memory_size:
            memory = {"packages": size, "processes": peak_memory(worker)}
        entry["changed"] = [
            _changed_sync(harness, facility_id, count)
            for count in changed
            if count <= size
        ]
        results.append(entry)
        harness.stop_workers()
        logger.info("growth %d packages: %s", size, entry["initial"])
    return {"sizes": results, "memory": memory}


def _changed_sync(harness: Harness, facility_id: int, count: int) -> dict[str, Any]:
    flourish_id = harness.flourish_facility_id(SYNCED_FACILITY)
    for package_id in harness.sandbox.package_ids(flourish_id)[:count]:
        harness.sandbox.call(
            "PATCH", f"/_sandbox/flourish/packages/{package_id}", json={}
        )
    figures = _cost_of_sync(harness, facility_id)
    figures["changed"] = count
    return figures


def peak_memory(worker: Any) -> list[dict[str, Any]]:
    """Read VmHWM and VmRSS (MiB) of the worker's main process and pool children."""
    processes = []
    for role, pid in [("main", worker.pid)] + [
        ("pool child", pid) for pid in worker.children()
    ]:
        fields = _status_fields(pid)
        processes.append(
            {
                "role": role,
                "pid": pid,
                "vm_hwm_mib": fields.get("VmHWM", 0) / 1024,
                "vm_rss_mib": fields.get("VmRSS", 0) / 1024,
            }
        )
    return processes


def _status_fields(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields
