"""No credential reaches a log, a task message, Flower, a dead letter or an error text.

One scenario per module feeds known secrets through every path that fails:
the sandbox tenants' Apex tokens and Flourish keys, a third tenant onboarded
with ``apexsync tenants add`` and ``facilities add`` using distinctive
credentials, a Flourish key that Flourish rejects (401), a batch that Apex
rejects (422), random 5xx and 429 answers on both APIs, and order pushes
that succeed, are refused or hit the rejected key. A real worker at DEBUG, a
real Flower, Redis and the database take part. Each test then searches one
place for every secret, in plain and URL-encoded form and by its last
characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from shared.db import get_engine, session_scope
from shared.models import Base, DeadLetter, Facility, OrderPush, SyncRun, Tenant
from shared.secrets import Vault
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import (
    PROJECT,
    ServiceEnv,
    WorkerProcess,
    reset_caches,
    sandbox_json,
    start_sync,
    wait_for_ping,
    wait_for_run,
    wait_until,
)
from workers.embedded import free_port

FLOWER_USER = "scan-ops"
#: Characters of each secret's end that count as a leak on their own, so a
#: cut excerpt such as "...c0ffee" is found too.
TAIL_CHARS = 20
SOURCE_TENANT = "Coastal Cultivators"
ONBOARDED_TENANT = "Scan Twin Company"
ONBOARDED_FACILITY = "Twin Main"
REJECTED_FACILITY = "GVF Processing"
#: Apex limits string fields to 255 characters, so this lot number is rejected.
REJECTED_LOT_NUMBER = "LOT-" + "7" * 300
PROCESS_TIMEOUT = 240.0


# A real Flower process --------------------------------------------------------


@dataclass
class FlowerProcess:
    """``apexsync flower`` on a free loopback port, with basic auth."""

    process: subprocess.Popen[bytes]
    url: str
    auth: tuple[str, str]
    log_path: Path

    @classmethod
    def start(
        cls, variables: dict[str, str], state_dir: Path, password: str
    ) -> FlowerProcess:
        port = free_port()
        env = {
            **os.environ,
            **variables,
            "APEXSYNC_FLOWER_USER": FLOWER_USER,
            "APEXSYNC_FLOWER_PASSWORD": password,
        }
        command = [sys.executable, "-m", "workers.cli", "flower"]
        command += ["--address", "127.0.0.1", "--port", str(port)]
        log_path = state_dir / "flower.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        flower = cls(
            process, f"http://127.0.0.1:{port}", (FLOWER_USER, password), log_path
        )
        wait_until(
            flower.is_listening, 60, f"Flower to listen:\n{flower.log()[-2000:]}"
        )
        return flower

    def is_listening(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"Flower exited at start:\n{self.log()[-3000:]}")
        try:
            return self.get("/").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, auth=self.auth, timeout=30)

    def tasks(self) -> dict[str, dict[str, Any]]:
        response = self.get("/api/tasks")
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks

    def sees_worker(self, prefix: str) -> bool:
        """Tell whether Flower received events from a live worker named ``prefix``."""
        alive = self.get("/api/workers", status="true").json()
        return any(name.startswith(prefix) and up for name, up in alive.items())

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_worker(
    env: ServiceEnv, queues: str, name: str, loglevel: str = "DEBUG"
) -> WorkerProcess:
    """Start ``apexsync worker`` like ``ServiceEnv.start_worker``, at ``loglevel``."""
    log_path = env.state_dir / f"{name}.log"
    command = [sys.executable, "-m", "workers.cli", "worker", "--queues", queues]
    command += ["--concurrency", "2", "--loglevel", loglevel]
    command += ["--hostname", f"{name}@%h"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env.variables},
            cwd=PROJECT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)
    env.processes.append(worker)
    wait_for_ping(f"{name}@", worker)
    return worker


# Searching --------------------------------------------------------------------


def secret_forms(secret: str) -> set[str]:
    """Return the texts whose presence means ``secret`` leaked."""
    return {secret, quote(secret, safe=""), secret[-TAIL_CHARS:]}


def leaks(text: str, known: dict[str, str]) -> list[str]:
    """Return the labels of the secrets found in ``text``."""
    return sorted(
        label
        for label, secret in known.items()
        if any(form in text for form in secret_forms(secret))
    )


def redis_dump(client: redis.Redis) -> str:
    """Render every key and value in the database, message bodies decoded."""
    parts = []
    for key in client.scan_iter(count=500):
        parts.append(key.decode(errors="replace"))
        for value in _values(client, key):
            raw = value.decode(errors="replace")
            parts.append(raw)
            parts.extend(_message_bodies(raw))
    return "\n".join(parts)


def _values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "hash":
        return [item for pair in client.hgetall(key).items() for item in pair]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    return []


def _message_bodies(raw: str) -> list[str]:
    """Decode the base64 bodies of kombu messages found in a JSON value."""
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return list(_walk_bodies(value))


def _walk_bodies(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _walk_bodies(item)
    if not isinstance(value, dict):
        return
    body = value.get("body")
    encoding = (value.get("properties") or {}).get("body_encoding")
    if isinstance(body, str) and encoding == "base64":
        with suppress(binascii.Error, ValueError):
            yield base64.b64decode(body).decode(errors="replace")
    for item in value.values():
        yield from _walk_bodies(item)


def table_text(exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Render every row of every table, except ``*_encrypted`` columns."""
    rendered = {}
    with get_engine().connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in exclude:
                continue
            columns = [c for c in table.columns if not c.name.endswith("_encrypted")]
            rows = connection.execute(select(*columns)).all()
            rendered[table.name] = "\n".join(repr(tuple(row)) for row in rows)
    return rendered


class RecordCapture(logging.Handler):
    """Keeps the records of this process, rendered with tracebacks, unmasked.

    The sandbox plays the remote APIs here, so its own records are left out.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] not in ("sandbox", "uvicorn"):
            self.lines.append(self.format(record))


# The scenario -----------------------------------------------------------------


@dataclass
class Scan:
    """The secrets of the scenario and what each place contained once it ended."""

    known: dict[str, str]
    worker_logs: list[str] = field(default_factory=list)
    flower_log: str = ""
    flower_tasks: str = ""
    flower_task_names: set[str] = field(default_factory=set)
    test_process_log: list[str] = field(default_factory=list)
    cli_output: list[str] = field(default_factory=list)
    redis_snapshots: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)
    dead_letters: str = ""
    run_errors: list[str] = field(default_factory=list)
    dead_letter_statuses: list[int | None] = field(default_factory=list)


def clean_database(database_url: str) -> None:
    engine = get_engine(database_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@contextmanager
def module_service(
    redis_url: str,
    database_url: str,
    state_dir: Path,
    packages: int,
    variables: dict[str, str] | None = None,
) -> Iterator[tuple[ServiceEnv, ExitStack]]:
    """Set up what the ``service`` fixture does, for a whole module.

    Yields the environment and an exit stack for more cleanup. Worker
    processes, the sandbox and the environment variables end with the block.
    """
    from sandbox.server import SandboxServer

    redis.Redis.from_url(redis_url).flushdb()
    clean_database(database_url)
    with ExitStack() as stack, pytest.MonkeyPatch.context() as patch:
        sandbox = SandboxServer(port=0, packages=packages).start()
        stack.callback(sandbox.stop)
        env = ServiceEnv.build(
            database_url=database_url,
            redis_url=redis_url,
            sandbox=sandbox,
            state_dir=state_dir,
            secret_key=TEST_SECRET_KEY,
        )
        env.variables.update(variables or {})
        for key, value in env.variables.items():
            patch.setenv(key, value)
        reset_caches()
        stack.callback(reset_caches)
        stack.callback(env.stop_processes)
        yield env, stack


@pytest.fixture(scope="module")
def scan(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scan]:
    state_dir = tmp_path_factory.mktemp("secret-scan")
    capture = RecordCapture()
    root = logging.getLogger()
    level = root.level
    variables = {"APEXSYNC_MAX_RETRY_COUNTDOWN": "4"}

    with module_service(redis_url, database_url, state_dir, 300, variables) as (
        env,
        stack,
    ):
        root.addHandler(capture)
        root.setLevel(logging.DEBUG)
        stack.callback(root.setLevel, level)
        stack.callback(root.removeHandler, capture)
        yield run_scenario(env, stack, capture)


def run_scenario(env: ServiceEnv, stack: ExitStack, capture: RecordCapture) -> Scan:
    sandbox = env.sandbox
    seed = sandbox_json(sandbox, "/_sandbox/seed")
    scan = Scan(known=seeded_secrets(seed))
    scan.known["fernet key"] = TEST_SECRET_KEY
    scan.known["flower password"] = f"flower-{secrets.token_hex(12)}"

    facility_ids = env.register_tenants()
    twin_token, twin_key = onboard_twin(sandbox, scan)
    scan.known |= {"onboarded apex token": twin_token, "onboarded key": twin_key}
    facility_ids.append(facility_named(ONBOARDED_FACILITY))
    scan.known["rejected flourish key"] = store_rejected_key(REJECTED_FACILITY)
    reject_one_batch(sandbox, seed)
    sandbox_json(sandbox, "/_sandbox/faults", "PUT", json=FAULTS)

    password = scan.known["flower password"]
    flower = FlowerProcess.start(env.variables, env.state_dir, password)
    stack.callback(flower.stop)
    inventory = start_worker(env, "inventory,default", "inventory")
    # Once Flower lists the worker as alive, it receives task events.
    wait_until(lambda: flower.sees_worker("inventory@"), 60, "Flower to see a worker")
    run_ids = [start_sync(facility_id) for facility_id in facility_ids]
    for run_id in run_ids:
        wait_for_run(run_id, PROCESS_TIMEOUT)

    push_ids = enqueue_demo_pushes(sandbox)
    scan.redis_snapshots.append(redis_dump(redis_client()))
    orders = start_worker(env, "orders", "orders")
    wait_until(lambda: pushes_ended(push_ids), PROCESS_TIMEOUT, "pushes to end")
    wait_until(lambda: flower_has_results(flower), 60, "Flower to hear every task")

    read_back_with_cli(scan)
    collect(scan, flower, [inventory, orders], capture)
    return scan


#: Random upstream failures, which each task retries a bounded number of times.
FAULTS = {
    "apex": {"error_rate": 0.06, "error_status": 503, "rate_429": 0.02, "seed": 11},
    "flourish": {"error_rate": 0.05, "error_status": 502, "seed": 12},
}


def seeded_secrets(seed: dict[str, Any]) -> dict[str, str]:
    known = {}
    for tenant in seed["tenants"]:
        known[f"{tenant['name']} apex token"] = tenant["apex_token"]
        known[f"{tenant['name']} read-only token"] = tenant["apex_readonly_token"]
        for facility in tenant["facilities"]:
            known[f"{facility['name']} key"] = facility["flourish_api_key"]
    return known


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["APEXSYNC_REDIS_URL"])


def onboard_twin(sandbox: Any, scan: Scan) -> tuple[str, str]:
    """Copy Coastal's data to new credentials and onboard it through the CLI."""
    from workers.cli import app

    token = f"42|scan_{secrets.token_hex(20)}"
    key = f"fl_scan_{secrets.token_hex(20)}"
    clone = sandbox_json(
        sandbox,
        "/_sandbox/tenants/clone",
        "POST",
        json={
            "source": SOURCE_TENANT,
            "name": ONBOARDED_TENANT,
            "apex_token": token,
            "flourish_api_keys": [key],
        },
    )
    facility = clone["facilities"][0]
    runner = CliRunner()
    added = runner.invoke(app, ["tenants", "add", ONBOARDED_TENANT], input=f"{token}\n")
    scan.cli_output.append(added.output)
    assert added.exit_code == 0, added.output

    arguments = ["facilities", "add", ONBOARDED_TENANT, ONBOARDED_FACILITY]
    arguments += ["--flourish-facility-id", str(facility["flourish_facility_id"])]
    arguments += ["--wholesale-room", facility["wholesale_room"]]
    arguments += ["--apex-operation-id", str(facility["apex_operation_id"])]
    added = runner.invoke(app, arguments, input=f"{key}\n")
    scan.cli_output.append(added.output)
    assert added.exit_code == 0, added.output
    return token, key


def read_back_with_cli(scan: Scan) -> None:
    """Run the commands an operator reads state with, and a failing onboarding."""
    from workers.cli import app

    with session_scope() as session:
        letter_ids = session.scalars(select(DeadLetter.id)).all()
    commands = [
        ["status"],
        ["status", "--json"],
        ["tenants", "list", "--json"],
        ["tenants", "show", ONBOARDED_TENANT, "--json"],
        ["facilities", "list", "--json"],
        ["facilities", "show", REJECTED_FACILITY, "--json"],
        ["runs", "list", "--json"],
        ["dlq", "list", "--json"],
        *(["dlq", "show", str(letter_id), "--json"] for letter_id in letter_ids),
    ]
    runner = CliRunner(env={"COLUMNS": "400"})
    for command in commands:
        result = runner.invoke(app, command)
        scan.cli_output.append(result.output)
        assert result.exit_code == 0, (command, result.output)

    bad_key = f"fl_bad_{secrets.token_hex(20)}"
    scan.known["key refused at onboarding"] = bad_key
    arguments = ["facilities", "add", ONBOARDED_TENANT, "Refused", "--json"]
    arguments += ["--flourish-facility-id", "missing", "--wholesale-room", "Vault"]
    arguments += ["--apex-operation-id", "958"]
    rejected = runner.invoke(app, arguments, input=f"{bad_key}\n")
    scan.cli_output.append(rejected.output)
    assert rejected.exit_code == 1, rejected.output


def facility_named(name: str) -> int:
    with session_scope() as session:
        return session.scalars(select(Facility.id).where(Facility.name == name)).one()


def store_rejected_key(facility_name: str) -> str:
    """Replace a facility's key with one Flourish does not know (a revoked key)."""
    key = f"fl_revoked_{secrets.token_hex(20)}"
    vault = Vault([TEST_SECRET_KEY])
    with session_scope() as session:
        session.execute(
            update(Facility)
            .where(Facility.name == facility_name)
            .values(flourish_api_key_encrypted=vault.encrypt(key))
        )
    return key


def reject_one_batch(sandbox: Any, seed: dict[str, Any]) -> None:
    """Give one syncable Coastal package a lot number that Apex rejects."""
    tenant = next(t for t in seed["tenants"] if t["name"] == SOURCE_TENANT)
    facility = tenant["facilities"][0]
    tag = syncable_package(sandbox.state, facility)
    path = f"/_sandbox/flourish/packages/{tag}"
    sandbox_json(sandbox, path, "PATCH", json={"lot_number": REJECTED_LOT_NUMBER})


def syncable_package(state: Any, facility: dict[str, Any]) -> str:
    with state.lock:
        company = next(
            c
            for c in state.flourish_companies.values()
            if facility["flourish_facility_id"] in c.packages
        )
        packages = company.packages[facility["flourish_facility_id"]].values()
        for package in packages:
            item = company.items.get(package["item_id"], {})
            if (
                package["package_status"] == "Created"
                and package["area_name"] == facility["wholesale_room"]
                and not package["is_locked"]
                and package["available_qty"] >= 1
                and not item.get("_unmapped")
            ):
                return str(package["package_id"])
    raise AssertionError("the sandbox seed has no syncable Coastal package")


def enqueue_demo_pushes(sandbox: Any) -> list[int]:
    """Build the demo orders and enqueue a push of every one of them."""
    from tasks.orders import enqueue_push

    sandbox_json(sandbox, "/_sandbox/apex/orders/generate", "POST")
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    push_ids = []
    with session_scope() as session:
        tenants = {t.name: t.id for t in session.scalars(select(Tenant))}
    for order in orders:
        with session_scope() as session:
            push = enqueue_push(
                session, tenants[order["company_name"]], order["id"], "manual"
            )
            push_ids.append(push.id)
    return push_ids


def pushes_ended(push_ids: list[int]) -> bool:
    with session_scope() as session:
        states = session.scalars(
            select(OrderPush.state).where(OrderPush.id.in_(push_ids))
        ).all()
    return all(state not in ("queued", "running") for state in states)


def flower_has_results(flower: FlowerProcess) -> bool:
    """Tell whether Flower heard of every task whose result is in Redis."""
    client = redis_client()
    stored = {
        key.decode().removeprefix("celery-task-meta-")
        for key in client.scan_iter("celery-task-meta-*")
    }
    return stored <= set(flower.tasks())


def collect(
    scan: Scan,
    flower: FlowerProcess,
    workers: list[WorkerProcess],
    capture: RecordCapture,
) -> None:
    # Give the workers a moment to flush their last log lines.
    time.sleep(1)
    scan.worker_logs = [worker.log() for worker in workers]
    tasks = flower.tasks()
    scan.flower_tasks = json.dumps(tasks)
    scan.flower_task_names = {task["name"] for task in tasks.values()}
    scan.flower_log = flower.log()
    scan.redis_snapshots.append(redis_dump(redis_client()))
    scan.tables = table_text(exclude=("dead_letters",))
    scan.dead_letters = table_text()["dead_letters"]
    scan.test_process_log = list(capture.lines)
    with session_scope() as session:
        scan.run_errors = [e for e in session.scalars(select(SyncRun.error)) if e]
        scan.dead_letter_statuses = list(
            session.scalars(select(DeadLetter.upstream_status))
        )


# The searches -----------------------------------------------------------------

SCENARIO_MARKS = (
    pytest.mark.slow,
    pytest.mark.processes,
    pytest.mark.redis,
    pytest.mark.timeout(600),
)


def scenario_test(function: Any) -> Any:
    """Mark a test that reads the module's scenario."""
    for mark in SCENARIO_MARKS:
        function = mark(function)
    return function


def test_leaks_finds_every_form() -> None:
    known = {"token": "42|scan_00112233445566778899aabbccddeeff"}

    assert leaks("Bearer 42|scan_00112233445566778899aabbccddeeff", known) == ["token"]
    assert leaks("token=42%7Cscan_00112233445566778899aabbccddeeff", known) == ["token"]
    assert leaks("...445566778899aabbccddeeff", known) == ["token"]
    assert leaks("42|scan_0011", known) == []


def test_redis_dump_decodes_message_body() -> None:
    import fakeredis

    client = fakeredis.FakeRedis()
    body = base64.b64encode(b'[[], {"api_key": "fl_hidden_in_body"}, {}]').decode()
    message = {"body": body, "properties": {"body_encoding": "base64"}}
    client.rpush("orders", json.dumps(message))

    assert "fl_hidden_in_body" in redis_dump(client)


@scenario_test
def test_scenario_reaches_every_failure(scan: Scan) -> None:
    assert 422 in scan.dead_letter_statuses
    assert any("credentials rejected" in error for error in scan.run_errors), (
        scan.run_errors
    )
    assert any("retry=" in log for log in scan.worker_logs)
    assert "celery-task-meta-" in scan.redis_snapshots[-1]
    assert '"kwargs"' in scan.redis_snapshots[-1]
    assert "orders.push_order" in scan.redis_snapshots[0]
    assert "inventory.create_batches" in scan.flower_task_names
    assert "orders.push_order" in scan.flower_task_names


@scenario_test
def test_worker_logs_contain_no_secret(scan: Scan) -> None:
    for log in scan.worker_logs:
        assert "upstream=apex" in log
        assert leaks(log, scan.known) == []


@scenario_test
def test_flower_log_contains_no_secret(scan: Scan) -> None:
    assert leaks(scan.flower_log, scan.known) == []


@scenario_test
def test_test_process_log_contains_no_secret(scan: Scan) -> None:
    assert scan.test_process_log
    assert leaks("\n".join(scan.test_process_log), scan.known) == []


@scenario_test
def test_cli_output_contains_no_secret(scan: Scan) -> None:
    assert "Flourish rejected the API key" in scan.cli_output[-1]
    assert leaks("\n".join(scan.cli_output), scan.known) == []


@scenario_test
def test_redis_contains_no_secret(scan: Scan) -> None:
    for snapshot in scan.redis_snapshots:
        assert leaks(snapshot, scan.known) == []


@scenario_test
def test_flower_tasks_contain_no_secret(scan: Scan) -> None:
    assert leaks(scan.flower_tasks, scan.known) == []


@scenario_test
def test_dead_letters_contain_no_secret(scan: Scan) -> None:
    assert REJECTED_LOT_NUMBER[:40] in scan.dead_letters
    assert leaks(scan.dead_letters, scan.known) == []


@scenario_test
def test_database_text_contains_no_secret(scan: Scan) -> None:
    for table, rendered in scan.tables.items():
        assert leaks(rendered, scan.known) == [], table


@scenario_test
def test_stored_credentials_are_ciphertext(scan: Scan) -> None:
    with get_engine().connect() as connection:
        stored = connection.execute(
            text(
                "SELECT apex_token_encrypted FROM tenants UNION ALL "
                "SELECT flourish_api_key_encrypted FROM facilities"
            )
        ).scalars()
        ciphertexts = "\n".join(stored)
    assert ciphertexts.count("gAAAAA") == 7
    assert leaks(ciphertexts, scan.known) == []
