"""``apexsync demo``: the whole service on the embedded default, against the sandbox.

It starts a real Valkey server, the sandbox, one Celery worker and beat as
separate processes, uses a SQLite file, syncs every seeded facility, pushes
the final orders, prints a summary and stops everything it started. State
lives under ``.state/demo`` so a second demo continues where the first ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from shared.settings import GRAMS_PER_POUND
from workers.embedded import EmbeddedValkey, free_port

# A pipe or a log file gets wide tables too, so the summary stays readable.
console = Console(width=None if sys.stdout.isatty() else 120)
STATE_DIR = Path(".state/demo")


def run_demo(packages: int, timeout: float) -> int:
    """Run the demo; return the process exit status."""
    state = STATE_DIR.resolve()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    with EmbeddedValkey(state / "valkey") as valkey, _processes() as started:
        sandbox_url = f"http://127.0.0.1:{free_port()}"
        env = _environment(state, valkey.url, sandbox_url)
        os.environ.update(env)
        _reset_cached_settings()
        console.print(
            f"Valkey on {valkey.url}, sandbox on {sandbox_url}, state in {state}"
        )

        from shared.migrate import upgrade
        from shared.settings import get_settings

        upgrade(get_settings().database_url)
        started.append(
            _spawn(
                "sandbox",
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "--port",
                    sandbox_url.rsplit(":", 1)[1],
                    "--packages",
                    str(packages),
                    "--state-file",
                    str(state / "sandbox.pickle"),
                ],
                state,
                env,
            )
        )
        seed = _wait_for_json(f"{sandbox_url}/_sandbox/seed", timeout=60)
        facility_ids = register_sandbox_tenants(seed)
        started.append(
            _spawn(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "worker",
                    "--concurrency",
                    "2",
                    "--hostname",
                    "demo@%h",
                ],
                state,
                env,
            )
        )
        started.append(
            _spawn("beat", [sys.executable, "-m", "workers.cli", "beat"], state, env)
        )
        _wait_for_worker(timeout=60)
        run_ids = _sync_all(facility_ids, timeout)
        order_summary = _push_orders(sandbox_url, timeout)
        _print_summary(run_ids, order_summary)
        return 0 if _all_succeeded(run_ids) else 1


def _environment(state: Path, redis_url: str, sandbox_url: str) -> dict[str, str]:
    return {
        "APEXSYNC_ENVIRONMENT": "demo",
        "APEXSYNC_DATABASE_URL": f"sqlite:///{state / 'apexsync.db'}",
        "APEXSYNC_REDIS_URL": redis_url,
        "APEXSYNC_APEX_BASE_URL": f"{sandbox_url}/apex/api",
        "APEXSYNC_FLOURISH_BASE_URL": f"{sandbox_url}/flourish/external/api",
        "APEXSYNC_SECRET_KEY": _secret_key(state),
        "APEXSYNC_STATE_DIR": str(state),
    }


def _secret_key(state: Path) -> str:
    """Read the demo's Fernet key, creating it on the first run."""
    from shared.secrets import generate_key

    path = state / "secret.key"
    if not path.exists():
        path.write_text(generate_key())
        path.chmod(0o600)
    return path.read_text().strip()


def _reset_cached_settings() -> None:
    from shared.db import get_engine
    from shared.redis_client import get_redis
    from shared.settings import get_settings
    from workers.app import app, apply_settings

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_redis.cache_clear()
    apply_settings(app, get_settings())


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            _stop(process)


def _spawn(
    name: str, command: list[str], state: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    log = (state / "logs" / f"{name}.log").open("ab")
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_json(url: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not respond within {timeout:.0f} s")


def _wait_for_worker(timeout: float) -> None:
    from workers.app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.control.ping(timeout=1.0):
            return
    raise TimeoutError(
        f"No Celery worker responded within {timeout:.0f} s; see .state/demo/logs"
    )


def register_sandbox_tenants(seed: dict[str, Any]) -> list[int]:
    """Add the sandbox's tenants and facilities unless present; return facility ids.

    Their next scheduled sync is set an interval ahead, so beat does not start
    a second run beside the demo's manual ones.
    """
    from shared.db import session_scope
    from shared.models import Tenant, utcnow
    from shared.secrets import Vault
    from shared.settings import get_settings

    vault = Vault.from_settings(get_settings())
    facility_ids = []
    with session_scope() as session:
        for tenant_seed in seed["tenants"]:
            tenant = session.scalars(
                select(Tenant).where(Tenant.name == tenant_seed["name"])
            ).first()
            if tenant is None:
                tenant = Tenant(
                    name=tenant_seed["name"],
                    apex_token_encrypted=vault.encrypt(tenant_seed["apex_token"]),
                    grams_per_pound=Decimal(
                        str(tenant_seed.get("grams_per_pound") or GRAMS_PER_POUND)
                    ),
                    auto_push_orders=False,
                )
                session.add(tenant)
                session.flush()
            for facility_seed in tenant_seed["facilities"]:
                facility_ids.append(
                    _register_facility(session, vault, tenant, facility_seed, utcnow())
                )
    return facility_ids


def _register_facility(
    session: Any, vault: Any, tenant: Any, seed: dict[str, Any], now: Any
) -> int:
    from shared.models import Facility

    facility = session.scalars(
        select(Facility)
        .where(Facility.tenant_id == tenant.id)
        .where(Facility.flourish_facility_id == seed["flourish_facility_id"])
    ).first()
    if facility is None:
        facility = Facility(
            tenant_id=tenant.id,
            name=seed["name"],
            flourish_facility_id=seed["flourish_facility_id"],
            flourish_api_key_encrypted=vault.encrypt(seed["flourish_api_key"]),
            wholesale_room=seed["wholesale_room"],
            apex_operation_id=int(seed["apex_operation_id"]),
        )
        session.add(facility)
    facility.next_sync_at = now + timedelta(
        seconds=facility.sync_interval_seconds or 14400
    )
    session.flush()
    return int(facility.id)


def _sync_all(facility_ids: list[int], timeout: float) -> list[int]:
    from shared.db import session_scope
    from shared.models import Facility
    from shared.runs import SyncAlreadyRunning, active_run_id, create_run
    from shared.settings import get_settings
    from tasks.inventory import publish_run
    from workers.cli import wait_for_runs

    deadline = timedelta(seconds=get_settings().run_deadline_seconds)
    run_ids, fresh = [], []
    with session_scope() as session:
        for facility_id in facility_ids:
            facility = session.get(Facility, facility_id)
            assert facility is not None, f"facility {facility_id} vanished"
            try:
                run = create_run(session, facility, "demo", deadline)
                fresh.append(run.id)
                run_ids.append(run.id)
            except SyncAlreadyRunning:
                active = active_run_id(session, facility_id)
                if active is not None:
                    run_ids.append(active)
    for run_id in fresh:
        publish_run(run_id)
    console.print(
        f"Syncing {len(run_ids)} facilities (runs {', '.join(map(str, run_ids))}) ..."
    )
    wait_for_runs(run_ids, timeout)
    return run_ids


def _push_orders(sandbox_url: str, timeout: float) -> dict[str, Any] | None:
    """Match buyers and push the sandbox's final orders, if orders are built."""
    try:
        from workers.demo_orders import push_demo_orders
    except ImportError:
        return None
    return push_demo_orders(sandbox_url, timeout)


def _all_succeeded(run_ids: list[int]) -> bool:
    from shared.db import session_scope
    from shared.models import SyncRun

    with session_scope() as session:
        states = session.scalars(select(SyncRun.state).where(SyncRun.id.in_(run_ids)))
        return all(state == "succeeded" for state in states)


def _print_summary(run_ids: list[int], order_summary: dict[str, Any] | None) -> None:
    from shared.db import session_scope
    from shared.models import SyncRun
    from shared.reports import run_details

    with session_scope() as session:
        rows = session.scalars(
            select(SyncRun).where(SyncRun.id.in_(run_ids)).order_by(SyncRun.id)
        )
        details = [run_details(session, run) for run in rows]
    for item in details:
        _print_facility(item)
    if order_summary is not None:
        from workers.demo_orders import print_order_summary

        print_order_summary(order_summary)


def _print_facility(details: dict[str, Any]) -> None:
    table = Table(
        title=(
            f"{details['tenant']} / {details['facility']} "
            f"(run {details['id']}, {details['state']})"
        ),
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value")
    duration = details["duration_seconds"]
    table.add_row("packages seen", str(details["fetched"]))
    table.add_row("batches created", str(details["created"]))
    table.add_row("skipped", str(details["skipped"]))
    for group in details["skipped_by_reason"]:
        table.add_row("", f"{group['count']}: {group['reason']}")
    table.add_row("failed", str(details["failed"]))
    for group in details["failed_by_reason"]:
        table.add_row("", f"{group['count']}: {group['reason']}")
    skus = ", ".join(
        f"{row['sku']} ({row['packages']})" for row in details["unmapped_skus"]
    )
    table.add_row("unmapped SKUs", skus or "none")
    table.add_row(
        "requests",
        f"apex {details['apex_requests']}, flourish {details['flourish_requests']}",
    )
    table.add_row("duration", "-" if duration is None else f"{duration:.1f} s")
    console.print(table)
