"""Helpers for tests that run real worker processes against real services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parent.parent


def reset_caches() -> None:
    """Forget settings, engines and Redis clients built from an older environment."""
    from shared.db import get_engine
    from shared.redis_client import get_redis
    from shared.settings import get_settings
    from workers.app import app, apply_settings

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_redis.cache_clear()
    apply_settings(app, get_settings())


def child_pids(pid: int) -> list[int]:
    """Return the ids of the direct children of ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


@dataclass
class WorkerProcess:
    """A real ``apexsync worker`` process."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def kill(self) -> None:
        """SIGKILL the whole worker: the main process and its pool."""
        for child in self.children():
            _kill(child)
        _kill(self.pid)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class ServiceEnv:
    """The environment of one test: variables, the sandbox, started processes."""

    variables: dict[str, str]
    sandbox: Any
    state_dir: Path
    processes: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        *,
        database_url: str,
        redis_url: str,
        sandbox: Any,
        state_dir: Path,
        secret_key: str,
    ) -> ServiceEnv:
        variables = {
            "APEXSYNC_ENVIRONMENT": "test",
            "APEXSYNC_DATABASE_URL": database_url,
            "APEXSYNC_REDIS_URL": redis_url,
            "APEXSYNC_APEX_BASE_URL": sandbox.apex_base_url,
            "APEXSYNC_FLOURISH_BASE_URL": sandbox.flourish_base_url,
            "APEXSYNC_SECRET_KEY": secret_key,
            "APEXSYNC_STATE_DIR": str(state_dir),
            "APEXSYNC_HTTP_TIMEOUT": "10",
        }
        return cls(variables=variables, sandbox=sandbox, state_dir=state_dir)

    def register_tenants(self) -> list[int]:
        """Add the sandbox's seeded tenants and facilities; return facility ids."""
        from workers.demo import register_sandbox_tenants

        seed = httpx.get(f"{self.sandbox.url}/_sandbox/seed", timeout=10).json()
        return register_sandbox_tenants(seed)

    def start_worker(
        self,
        *,
        queues: str = "inventory,orders,default",
        concurrency: int = 1,
        extra: dict[str, str] | None = None,
        name: str = "worker",
    ) -> WorkerProcess:
        """Start a real worker process and wait until it answers a ping."""
        log_path = self.state_dir / f"{name}-{len(self.processes)}.log"
        env = {**os.environ, **self.variables, **(extra or {})}
        command = [
            sys.executable,
            "-m",
            "workers.cli",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}{len(self.processes)}@%h",
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(process, log_path)
        self.processes.append(worker)
        wait_for_ping(f"{name}{len(self.processes) - 1}@", worker)
        return worker

    def stop_processes(self) -> None:
        for worker in self.processes:
            worker.stop()
        self.processes.clear()


def wait_for_ping(prefix: str, worker: WorkerProcess, timeout: float = 60.0) -> None:
    from workers.app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited at start:\n{worker.log()[-3000:]}")
        replies = app.control.ping(timeout=0.5)
        if any(name.startswith(prefix) for reply in replies for name in reply):
            return
    raise TimeoutError(
        f"worker did not answer within {timeout} s:\n{worker.log()[-3000:]}"
    )


def wait_until(
    condition: Any, timeout: float, message: str, interval: float = 0.2
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def run_state(run_id: int) -> str:
    from shared.db import session_scope
    from shared.models import SyncRun

    with session_scope() as session:
        return session.get(SyncRun, run_id).state


def wait_for_run(run_id: int, timeout: float = 180.0) -> str:
    """Wait until the run has ended; return its final state."""
    return wait_until(
        lambda: (state := run_state(run_id)) not in ("queued", "running") and state,
        timeout,
        f"run {run_id} to end",
    )


def start_sync(facility_id: int, trigger: str = "manual") -> int:
    """Create and publish a sync run of ``facility_id``; return its id."""
    from datetime import timedelta

    from shared.db import session_scope
    from shared.models import Facility
    from shared.runs import create_run
    from tasks.inventory import publish_run

    with session_scope() as session:
        run = create_run(
            session, session.get(Facility, facility_id), trigger, timedelta(minutes=30)
        )
        run_id = run.id
    publish_run(run_id)
    return run_id


def sandbox_json(sandbox: Any, path: str, method: str = "GET", **kwargs: Any) -> Any:
    response = httpx.request(method, f"{sandbox.url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()
