"""The chaos run: syncs and order pushes while workers die and Redis restarts.

``python -m tests.chaos [--kills 20 --redis-restarts 3]`` (``make chaos``)
starts its own Valkey, a SQLite database (or ``--database-url``), the
sandbox with upstream faults switched on and several real worker processes.
It syncs every seeded facility and pushes every final order while a chaos
thread SIGKILLs pool processes and whole workers at random and restarts
Redis (losing every queued message). This process plays beat: it runs the
reconciler and, like the scheduler and the order poller, starts a new run
or push where one failed. Once the work is done and the faults are spent,
it switches the upstream faults off, lets the work settle and checks:

- each eligible package has exactly one Apex batch, and nothing else has one;
- each final order has exactly one Flourish order, and no order has two;
- no batch or order intent is left open;
- every dead letter, failed run and failed push names a real failure.

It prints the faults injected and the invariants, and exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import func, select

from tests.helpers import ServiceEnv, WorkerProcess, reset_caches, sandbox_json
from workers.embedded import EmbeddedValkey

logger = logging.getLogger("tests.chaos")

#: Worker settings: limits short enough that lost work is found again within
#: a minute, long enough for a page under the injected latency and faults.
WORKER_SETTINGS = {
    "APEXSYNC_TASK_SOFT_TIME_LIMIT": "25",
    "APEXSYNC_TASK_TIME_LIMIT": "30",
    "APEXSYNC_MAX_RETRY_COUNTDOWN": "5",
    "APEXSYNC_TASK_MAX_RETRIES": "8",
    "APEXSYNC_VISIBILITY_TIMEOUT": "40",
    "APEXSYNC_RUN_DEADLINE_SECONDS": "30",
    "APEXSYNC_HTTP_TIMEOUT": "5",
}

#: Upstream faults while the chaos lasts. Rates are per request.
APEX_FAULTS = {
    "latency_ms": 20,
    "error_rate": 0.03,
    "rate_429": 0.02,
    "drop_rate": 0.01,
    "timeout_rate": 0.002,
    "timeout_seconds": 6,
    "malformed_rate": 0.002,
    "lose_response": [
        {"method": "POST", "path_contains": "/v2/batches", "count": 6},
    ],
    "seed": 11,
}
FLOURISH_FAULTS = {
    "latency_ms": 10,
    "error_rate": 0.04,
    "drop_rate": 0.01,
    "malformed_rate": 0.002,
    "lose_response": [
        {"method": "POST", "path_contains": "outbound-orders", "count": 4},
    ],
    "seed": 12,
}

#: Exceptions that the injected faults can cause. A dead letter of any other
#: type means the code failed on its own.
EXPLAINED_ERRORS = {
    "UpstreamUnavailable": "5xx, timeout or dropped connection, retries spent",
    "RateLimited": "429 with Retry-After, retries spent",
    "InvalidPayload": "malformed upstream body",
    "PoisonMessage": "the worker was killed in each delivery",
    "HardTimeLimitExceeded": "hard time limit",
    "SoftTimeLimitExceeded": "soft time limit, retries spent",
    "ConnectionError": "Redis restarted",
    "OperationalError": "Redis restarted",
    "TimeoutError": "Redis restarted",
}

FINAL_STAGES = ("Accepted", "Pending Shipment")
PUSHABLE_BUYERS = ("clean", "cosmetic")


@dataclass
class Chaos:
    """The services of one chaos run and what has been done to them."""

    env: ServiceEnv
    valkey: EmbeddedValkey
    workers: list[WorkerProcess]
    worker_count: int
    counts: Counter[str] = field(default_factory=Counter)
    #: "inventory" until the first order push, then "orders".
    phase: str = "inventory"
    #: Facility id -> the run this round started for it.
    round_runs: dict[int, int] = field(default_factory=dict)
    #: Apex order id -> the push this round started for it.
    round_pushes: dict[int, int] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    #: Guards ``workers``, which the chaos thread and the supervisor change.
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="Worker kills (min).")
    parser.add_argument(
        "--redis-restarts", type=int, default=3, help="Redis restarts (min)."
    )
    parser.add_argument(
        "--packages", type=int, default=1500, help="Packages the sandbox seeds."
    )
    parser.add_argument("--workers", type=int, default=2, help="Worker processes.")
    parser.add_argument(
        "--seconds", type=float, default=1800, help="Give up after this many seconds."
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the chaos.")
    parser.add_argument(
        "--database-url", help="A PostgreSQL URL; default: a SQLite file."
    )
    parser.add_argument("--keep", type=Path, help="Keep logs and state in this folder.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    random.seed(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="apexsync-chaos-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        chaos = start_services(folder, args)
        try:
            finished = drive(chaos, args)
            elapsed = f"after {time.monotonic() - started:.0f} s"
            report = {"work finished before the deadline": (finished, elapsed)}
            report.update(check_invariants(chaos))
            collect_figures(chaos)
        finally:
            stop_services(chaos)
    print_report(chaos, report, time.monotonic() - started)
    return 0 if all(held for held, _ in report.values()) else 1


# --- services -----------------------------------------------------------------


def start_services(folder: Path, args: argparse.Namespace) -> Chaos:
    from sandbox.server import SandboxServer
    from shared.migrate import upgrade
    from shared.secrets import generate_key

    valkey = EmbeddedValkey(folder / "valkey")
    valkey.start()
    sandbox = SandboxServer(port=0, packages=args.packages, seed=7)
    sandbox.start()
    database_url = args.database_url or f"sqlite:///{folder / 'apexsync.db'}"
    env = ServiceEnv.build(
        database_url=database_url,
        redis_url=valkey.url,
        sandbox=sandbox,
        state_dir=folder,
        secret_key=generate_key(),
    )
    env.variables.update(WORKER_SETTINGS)
    _export(env.variables)
    upgrade(database_url)
    env.register_tenants()
    workers = [start_worker(env) for _ in range(args.workers)]
    return Chaos(env, valkey, workers, args.workers)


def _export(variables: dict[str, str]) -> None:
    import os

    os.environ.update(variables)
    reset_caches()


def start_worker(env: ServiceEnv) -> WorkerProcess:
    """Start a worker; keep it even when its first ping fails (Redis restarting)."""
    try:
        return env.start_worker(queues="inventory,orders,default", concurrency=2)
    except (RedisError, OperationalError, TimeoutError) as exc:
        logger.warning("worker started without answering a ping: %s", exc)
        return env.processes[-1]


def stop_services(chaos: Chaos) -> None:
    chaos.env.stop_processes()
    chaos.env.sandbox.stop()
    chaos.valkey.stop()


# --- the chaos thread ---------------------------------------------------------


def chaos_loop(chaos: Chaos, args: argparse.Namespace, stop: threading.Event) -> None:
    """Kill a worker or restart Redis every few seconds until the budget is spent.

    Until the first order push, at most two thirds of the kills and all but
    one restart are spent, so the order pushes meet faults too.
    """
    while not stop.wait(random.uniform(2.0, 5.0)):
        kills, restarts = fault_budget(chaos, args)
        wants_restart = chaos.counts["redis restarts"] < restarts
        try:
            if wants_restart and (
                chaos.counts["kills"] >= kills or random.random() < 0.15
            ):
                restart_redis(chaos)
            elif chaos.counts["kills"] < kills:
                kill_worker(chaos)
        except Exception:
            logger.exception("chaos action failed; going on")


def fault_budget(chaos: Chaos, args: argparse.Namespace) -> tuple[int, int]:
    """Return the kills and Redis restarts allowed so far."""
    if chaos.phase == "orders":
        return args.kills, args.redis_restarts
    return (args.kills * 2 + 2) // 3, max(args.redis_restarts - 1, 0)


def kill_worker(chaos: Chaos) -> None:
    """SIGKILL a worker's pool processes (two times in three) or the whole worker.

    Killing every pool process of the worker makes it likely that a running
    task dies with one of them.
    """
    import os
    import signal

    with chaos.lock:
        worker = random.choice(chaos.workers)
        children = worker.children()
        if children and random.random() < 2 / 3:
            for child in children:
                os.kill(child, signal.SIGKILL)
            chaos.counts["pool processes killed"] += len(children)
        else:
            worker.kill()
            chaos.workers.remove(worker)
            chaos.counts["whole workers killed"] += 1
            chaos.workers.append(start_worker(chaos.env))
    chaos.counts["kills"] += 1
    chaos.counts[f"kills during {chaos.phase}"] += 1


def supervise(chaos: Chaos) -> None:
    """Replace workers that exited on their own, as a process supervisor would.

    A Celery 5.7 worker can exit with "Unrecoverable error" when Redis drops
    its connection (kombu fails while closing the lost channel), so
    production runs workers under a supervisor that restarts them.
    """
    with chaos.lock:
        alive = [worker for worker in chaos.workers if worker.process.poll() is None]
        chaos.counts["workers that exited on their own"] += len(chaos.workers) - len(
            alive
        )
        while len(alive) < chaos.worker_count:
            alive.append(start_worker(chaos.env))
        chaos.workers[:] = alive


def restart_redis(chaos: Chaos) -> None:
    chaos.valkey.restart()
    chaos.counts["redis restarts"] += 1
    chaos.counts[f"redis restarts during {chaos.phase}"] += 1


def faults_spent(chaos: Chaos, args: argparse.Namespace) -> bool:
    return (
        chaos.counts["kills"] >= args.kills
        and chaos.counts["redis restarts"] >= args.redis_restarts
    )


# --- driving the work ---------------------------------------------------------


def drive(chaos: Chaos, args: argparse.Namespace) -> bool:
    """Run the work under chaos until it is done and the faults are spent.

    Returns whether the work finished before the deadline.
    """
    sandbox = chaos.env.sandbox
    faults = {"apex": APEX_FAULTS, "flourish": FLOURISH_FAULTS}
    sandbox_json(sandbox, "/_sandbox/faults", "PUT", json=faults)
    deadline = time.monotonic() + args.seconds
    stop = threading.Event()
    thread = threading.Thread(target=chaos_loop, args=(chaos, args, stop), daemon=True)
    thread.start()
    try:
        finished = settle(chaos, deadline)
        while finished and not faults_spent(chaos, args):
            finished = settle(chaos, deadline)
    finally:
        stop.set()
        thread.join()
    chaos.figures["upstream"] = sandbox_json(sandbox, "/_sandbox/stats")
    sandbox_json(sandbox, "/_sandbox/faults", "DELETE")
    return settle(chaos, deadline) and finished


def settle(chaos: Chaos, deadline: float) -> bool:
    """Sync every facility, then push every final order, until all succeeded."""
    chaos.counts["work rounds"] += 1
    chaos.round_runs.clear()
    chaos.round_pushes.clear()
    return (
        retry_until(chaos, lambda: sync_round(chaos), deadline, "inventory")
        and retry_until(chaos, match_all_buyers, deadline, "buyer matching")
        and retry_until(chaos, lambda: push_round(chaos), deadline, "order pushes")
    )


def retry_until(
    chaos: Chaos, step: Callable[[], bool], deadline: float, what: str
) -> bool:
    """Call the reconciler and ``step`` until ``step`` reports done or time is up.

    Dead workers are replaced on each pass, as a process supervisor would.
    """
    from tasks.maintenance import reconcile_runs
    from tasks.orders import reconcile_pushes

    while time.monotonic() < deadline:
        supervise(chaos)
        try:
            reconcile_runs()
            reconcile_pushes()
            if step():
                return True
        except (RedisError, OperationalError) as exc:
            logger.warning("%s: Redis unavailable (%s); trying again", what, exc)
        time.sleep(2)
    logger.error("%s did not finish before the chaos run's deadline", what)
    return False


def sync_round(chaos: Chaos) -> bool:
    """Start a run for each facility without a succeeded run in this round.

    A run that ended failed is followed by a new one, as the scheduler would.
    Returns whether every facility's run of this round succeeded.
    """
    from shared.db import session_scope
    from shared.models import ACTIVE_RUN_STATES, Facility, SyncRun
    from shared.runs import SyncAlreadyRunning, create_run
    from tasks.inventory import publish_run

    to_publish, done = [], 0
    with session_scope() as session:
        facilities = list(session.scalars(select(Facility)))
        for facility in facilities:
            run_id = chaos.round_runs.get(facility.id)
            state = session.get(SyncRun, run_id).state if run_id else None
            if state == "succeeded":
                done += 1
            if state is not None and (
                state == "succeeded" or state in ACTIVE_RUN_STATES
            ):
                continue
            if state is not None:
                chaos.counts[f"runs ended {state}"] += 1
            try:
                run = create_run(session, facility, "manual", _deadline())
            except SyncAlreadyRunning:
                continue
            chaos.round_runs[facility.id] = run.id
            to_publish.append(run.id)
    for run_id in to_publish:
        chaos.counts["runs started"] += 1
        publish_run(run_id)
    return done == len(facilities)


def _deadline() -> Any:
    from datetime import timedelta

    from shared.settings import get_settings

    return timedelta(seconds=get_settings().run_deadline_seconds)


def match_all_buyers() -> bool:
    """Match every tenant's buyers in this process, as the buyers command does."""
    from shared.db import session_scope
    from shared.errors import SyncError
    from shared.models import Tenant
    from tasks.orders import match_buyers

    with session_scope() as session:
        tenant_ids = list(session.scalars(select(Tenant.id)))
    try:
        for tenant_id in tenant_ids:
            match_buyers.run(tenant_id=tenant_id, full=True)
    except SyncError as exc:
        logger.warning("buyer matching failed (%s); trying again", exc)
        return False
    return True


def push_round(chaos: Chaos) -> bool:
    """Push each final order once this round, again where a push failed.

    Orders of known buyers must end created, updated or unchanged, and a
    failed push of one is followed by a new one, as the order poller would.
    The others must end failed or refused with the reason. They are not
    pushed again. Returns whether every push of this round has ended so.
    """
    from shared.db import session_scope
    from shared.models import ACTIVE_RUN_STATES, OrderPush
    from tasks.orders import enqueue_push

    chaos.phase = "orders"
    done = 0
    orders = final_orders(chaos.env.sandbox)
    with session_scope() as session:
        for tenant_id, apex_order_id, pushable in orders:
            push_id = chaos.round_pushes.get(apex_order_id)
            state = session.get(OrderPush, push_id).state if push_id else None
            if state in ACTIVE_RUN_STATES:
                continue
            if state is not None and (not pushable or state not in ("failed",)):
                done += 1
                continue
            if state is not None:
                chaos.counts["pushes ended failed"] += 1
            push = enqueue_push(session, tenant_id, apex_order_id, "poll")
            chaos.round_pushes[apex_order_id] = push.id
            chaos.counts["pushes started"] += 1
    chaos.counts["push rounds"] += 1
    return done == len(orders)


def final_orders(sandbox: Any) -> list[tuple[int, int, bool]]:
    """Return (tenant id, Apex order id, pushable) of each final order.

    An order is pushable when its buyer matches one Flourish destination.
    The demo orders of ambiguous, unmatched and address-mismatched buyers
    are not: their pushes end failed with the reason.
    """
    from sandbox.catalog import TENANTS
    from shared.db import session_scope
    from shared.models import Tenant

    cases = {
        (tenant.name, customer.name): customer.case
        for tenant in TENANTS
        for customer in tenant.customers
    }
    with session_scope() as session:
        tenant_ids = {
            tenant.name: tenant.id for tenant in session.scalars(select(Tenant))
        }
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    if not orders:
        sandbox_json(sandbox, "/_sandbox/apex/orders/generate", "POST")
        orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    return [
        (
            tenant_ids[order["company_name"]],
            int(order["id"]),
            cases.get((order["company_name"], order["buyer"]["name"]))
            in PUSHABLE_BUYERS,
        )
        for order in orders
        if order["order_status"]["parent_status"]["name"] in FINAL_STAGES
        and not order["cancelled"]
    ]


# --- invariants ---------------------------------------------------------------


def check_invariants(chaos: Chaos) -> dict[str, tuple[bool, str]]:
    """Check every invariant; return name -> (held, detail)."""
    from tests.faults_support import check_facility, final_order_problems

    sandbox = chaos.env.sandbox
    report: dict[str, tuple[bool, str]] = {}
    checks = [check_facility(sandbox, facility_id) for facility_id in facility_ids()]
    report["one batch per eligible package"] = _batch_invariant(checks)
    report["no batch for an ineligible package"] = _listed(
        [tag for check in checks for tag in check.unexpected], "unexpected batches"
    )
    report["no batch intent left open"] = _listed(
        [tag for check in checks for tag in check.open_intents], "open batch intents"
    )
    orders = final_orders(sandbox)
    pushable = [apex_id for _, apex_id, ok in orders if ok]
    problems = final_order_problems(sandbox, pushable)
    report["one Flourish order per pushable final order"] = (
        not problems,
        f"{len(pushable)} orders" + (f"; {problems[:5]}" if problems else ""),
    )
    held_back = [apex_id for _, apex_id, ok in orders if not ok]
    report["no Flourish order for the other final orders"] = _listed(
        flourish_orders_for(sandbox, held_back), "Flourish orders"
    )
    report["no order intent left open"] = _listed(open_order_intents(), "open intents")
    report["every dead letter explains a real failure"] = _dead_letter_invariant()
    report["every failed run and push has a reason"] = _reason_invariant()
    return report


def flourish_orders_for(sandbox: Any, apex_ids: list[int]) -> list[str]:
    wanted = {str(apex_id) for apex_id in apex_ids}
    outbound = sandbox_json(sandbox, "/_sandbox/flourish/outbound-orders")["orders"]
    return [order["id"] for order in outbound if order["original_order_id"] in wanted]


def facility_ids() -> list[int]:
    from shared.db import session_scope
    from shared.models import Facility

    with session_scope() as session:
        return list(session.scalars(select(Facility.id).order_by(Facility.id)))


def open_order_intents() -> list[int]:
    from tests.faults_support import open_order_intents as intents

    return intents()


def _batch_invariant(checks: list[Any]) -> tuple[bool, str]:
    eligible = sum(len(check.eligible) for check in checks)
    duplicates = [tag for check in checks for tag in check.duplicates]
    missing = [tag for check in checks for tag in check.missing]
    problems = [text for check in checks for text in check.problems]
    held = not duplicates and not missing and not problems
    detail = (
        f"{eligible} eligible packages; duplicates {len(duplicates)}, "
        f"missing {len(missing)}, link mismatches {len(problems)}"
    )
    if not held:
        detail += f"; e.g. {(duplicates + missing + problems)[:5]}"
    return held, detail


def _listed(items: list[Any], what: str) -> tuple[bool, str]:
    detail = f"{len(items)} {what}" + (f": {items[:5]}" if items else "")
    return not items, detail


def _dead_letter_invariant() -> tuple[bool, str]:
    from tests.faults_support import dead_letters

    letters = dead_letters()
    unexplained = [
        f"{letter.id} {letter.task_name} {letter.exception_type}: {letter.message}"
        for letter in letters
        if letter.exception_type not in EXPLAINED_ERRORS
        or not letter.message
        or letter.attempts < 1
    ]
    kinds = Counter(letter.exception_type for letter in letters)
    detail = f"{len(letters)} dead letters {dict(kinds)}"
    if unexplained:
        detail += f"; unexplained: {unexplained[:5]}"
    return not unexplained, detail


def _reason_invariant() -> tuple[bool, str]:
    from shared.db import session_scope
    from shared.models import OrderPush, SyncRun

    with session_scope() as session:
        runs = session.execute(
            select(SyncRun.state, func.count()).group_by(SyncRun.state)
        ).all()
        silent_runs = session.scalar(
            select(func.count())
            .select_from(SyncRun)
            .where(SyncRun.state == "failed")
            .where(SyncRun.error.is_(None))
        )
        pushes = session.execute(
            select(OrderPush.state, func.count()).group_by(OrderPush.state)
        ).all()
        silent_pushes = session.scalar(
            select(func.count())
            .select_from(OrderPush)
            .where(OrderPush.state.in_(("failed", "refused")))
            .where(OrderPush.reason.is_(None))
        )
    detail = f"runs {dict(runs)}, pushes {dict(pushes)}"
    return not silent_runs and not silent_pushes, detail


# --- the report ---------------------------------------------------------------


def collect_figures(chaos: Chaos) -> None:
    """Read the upstream and worker-log figures before the services stop."""
    counts: Counter[str] = Counter()
    for log in sorted(chaos.env.state_dir.glob("worker-*.log")):
        text = log.read_text(errors="replace")
        counts["task retries"] += text.count("retry: Retry in")
        counts["tasks lost with their process"] += text.count("WorkerLostError(")
        counts["hard time limits"] += text.count("Hard time limit")
        counts["broker reconnects"] += text.count("Trying to re-establish")
    chaos.figures["logs"] = dict(counts)


def print_report(
    chaos: Chaos, report: dict[str, tuple[bool, str]], seconds: float
) -> None:
    print(f"Chaos run finished in {seconds:.0f} s.")
    print("Faults injected:")
    for name in (
        "kills",
        "pool processes killed",
        "whole workers killed",
        "redis restarts",
        "workers that exited on their own",
    ):
        print(f"  {name}: {chaos.counts[name]}")
    for api, stats in chaos.figures.get("upstream", {}).items():
        print(f"  {api} requests: {stats['total']}, by status {stats['by_status']}")
    print(f"  seen in worker logs: {chaos.figures.get('logs', {})}")
    for name in (
        "kills during inventory",
        "kills during orders",
        "redis restarts during inventory",
        "redis restarts during orders",
    ):
        print(f"  {name}: {chaos.counts[name]}")
    print("Work:")
    for name in (
        "work rounds",
        "runs started",
        "runs ended failed",
        "pushes started",
        "pushes ended failed",
    ):
        print(f"  {name}: {chaos.counts[name]}")
    print("Invariants:")
    for name, (held, detail) in report.items():
        print(f"  [{'held' if held else 'FAILED'}] {name}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
