"""Benchmarks of the sync pipeline against the sandbox: ``python -m tests.bench``.

Runs every scenario on the embedded default (Valkey + SQLite) and on the
machine's Redis (db 14) and PostgreSQL when both respond, then rewrites
BENCHMARKS.md. ``--quick`` uses smaller sizes and one repetition and
finishes in under 5 minutes. Benchmarks report figures and never fail on
time; the exit status is non-zero only when a scenario raised.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench_env import (
    Backend,
    Harness,
    SandboxProcess,
    embedded_backend,
    machine_backend,
)
from tests.helpers import PROJECT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """Sizes and repetitions of one benchmark run."""

    name: str
    rate_packages: int
    #: (added latency in ms, repetitions) of the rate-limit scenario; the
    #: machine backend runs only the first entry.
    rate_runs: tuple[tuple[float, int], ...]
    overhead_packages: int
    overhead_repeats: int
    dispatch_facilities: int
    dispatch_repeats: int
    tenants: int
    tenant_packages: int
    concurrencies: tuple[tuple[str, int], ...]
    tenant_limit: float
    tenant_latency_ms: float
    growth_sizes: tuple[int, ...]
    changed: tuple[int, ...]
    memory_packages: int
    machine_scenarios: tuple[str, ...] = field(default=())


FULL = Profile(
    name="full",
    rate_packages=2000,
    rate_runs=((0.0, 3), (50.0, 1)),
    overhead_packages=2000,
    overhead_repeats=3,
    dispatch_facilities=10000,
    dispatch_repeats=3,
    tenants=50,
    tenant_packages=100,
    concurrencies=(("prefork", 1), ("prefork", 2), ("prefork", 4), ("threads", 16)),
    tenant_limit=150.0,
    tenant_latency_ms=20.0,
    growth_sizes=(500, 2000, 10000),
    changed=(0, 10, 100, 1000),
    memory_packages=10000,
    machine_scenarios=("rate", "overhead", "dispatch", "tenants", "growth"),
)

QUICK = Profile(
    name="quick",
    rate_packages=300,
    rate_runs=((0.0, 1),),
    overhead_packages=500,
    overhead_repeats=2,
    dispatch_facilities=10000,
    dispatch_repeats=1,
    tenants=50,
    tenant_packages=100,
    concurrencies=(("prefork", 1), ("prefork", 2)),
    tenant_limit=15.0,
    tenant_latency_ms=20.0,
    growth_sizes=(250, 1000),
    changed=(0, 10, 100),
    memory_packages=1000,
    machine_scenarios=("overhead", "dispatch"),
)

SCENARIOS = ("rate", "overhead", "dispatch", "tenants", "growth")


def run_scenarios(
    harness: Harness, profile: Profile, names: tuple[str, ...]
) -> dict[str, Any]:
    """Run the named scenarios on one backend; a failure is recorded, not raised."""
    from tests import bench_fleet, bench_scenarios

    rate_runs = profile.rate_runs
    if harness.backend.name != "embedded":
        rate_runs = rate_runs[:1]
    steps: dict[str, Callable[[], Any]] = {
        "rate": lambda: [
            bench_scenarios.rate_limit_use(
                harness, profile.rate_packages, latency, repeats
            )
            for latency, repeats in rate_runs
        ],
        "overhead": lambda: bench_scenarios.pipeline_overhead(
            harness, profile.overhead_packages, profile.overhead_repeats
        ),
        "dispatch": lambda: bench_fleet.dispatcher(
            harness, profile.dispatch_facilities, profile.dispatch_repeats
        ),
        "tenants": lambda: bench_fleet.many_tenants(
            harness,
            profile.tenants,
            profile.tenant_packages,
            list(profile.concurrencies),
            profile.tenant_limit,
            profile.tenant_latency_ms,
        ),
        "growth": lambda: bench_scenarios.growth(
            harness,
            list(profile.growth_sizes),
            list(profile.changed),
            profile.memory_packages,
        ),
    }
    results: dict[str, Any] = {}
    for name in names:
        started = time.monotonic()
        logger.info("backend=%s scenario=%s starting", harness.backend.name, name)
        try:
            results[name] = steps[name]()
        except Exception:
            logger.exception(
                "backend=%s scenario=%s failed", harness.backend.name, name
            )
            results[name] = {"error": traceback.format_exc(limit=8)}
        finally:
            harness.stop_workers()
        results[name + "_seconds"] = time.monotonic() - started
    return results


def run(profile: Profile, backends: tuple[str, ...], names: tuple[str, ...]) -> dict:
    """Run the benchmark on each backend, each in a process of its own.

    Celery keeps its broker connections for the life of a process, so one
    process per backend keeps the second backend off the first one's Redis.
    """
    started = time.monotonic()
    report: dict[str, Any] = {"profile": asdict(profile), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="apexsync-bench-") as folder:
        for name in backends:
            output = Path(folder) / f"{name}.json"
            command = [
                sys.executable, "-m", "tests.bench", "--profile", profile.name,
                "--scenarios", ",".join(names), "--one-backend", name,
                "--results-file", str(output),
            ]  # fmt: skip
            subprocess.run(command, cwd=PROJECT, check=False)
            if output.exists():
                report["backends"][name] = json.loads(output.read_text())
            else:
                report["backends"][name] = {"skipped": "the benchmark process failed"}
    report["seconds"] = time.monotonic() - started
    report["finished_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return report


def run_backend(profile: Profile, name: str, names: tuple[str, ...]) -> dict:
    """Run the scenarios on one backend in this process; return its figures."""
    workdir = Path(tempfile.mkdtemp(prefix="apexsync-bench-"))
    backend, stop = _backend(name, workdir)
    if backend is None:
        return {"skipped": "Redis or PostgreSQL is down"}
    selected = names if name == "embedded" else _machine_names(profile, names)
    sandbox = SandboxProcess(workdir, packages=0)
    harness = Harness(backend, sandbox, workdir / name)
    harness.workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run_scenarios(harness, profile, selected)
    finally:
        harness.stop_workers()
        sandbox.stop()
        stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return {"title": backend.title, "results": results}


def _machine_names(profile: Profile, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if name in profile.machine_scenarios)


def _backend(name: str, workdir: Path) -> tuple[Backend | None, Callable[[], None]]:
    if name == "embedded":
        (workdir / name).mkdir(parents=True, exist_ok=True)
        backend, valkey = embedded_backend(workdir / name)
        return backend, valkey.stop
    return machine_backend(), lambda: None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Benchmark the sync pipeline against the sandbox and write "
        "BENCHMARKS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, one repetition"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--backends",
        default="embedded,machine",
        help="comma-separated subset of embedded, machine",
    )
    parser.add_argument("--profile", choices=("full", "quick"), help=argparse.SUPPRESS)
    parser.add_argument("--one-backend", help=argparse.SUPPRESS)
    parser.add_argument("--results-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite the Markdown from the figures of an earlier run",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=PROJECT / "BENCHMARKS.md",
        help="Markdown file to rewrite (default: BENCHMARKS.md)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for noisy in ("httpx", "celery", "kombu", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tests.bench_report import render

    if args.render:
        args.output.write_text(render(json.loads(args.render.read_text())))
        return 0
    profile = QUICK if args.quick or args.profile == "quick" else FULL
    names = tuple(name for name in args.scenarios.split(",") if name)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.one_backend:
        figures = run_backend(profile, args.one_backend, names)
        args.results_file.write_text(json.dumps(figures, indent=1, default=str))
        return 0
    report = run(profile, tuple(args.backends.split(",")), names)
    raw = PROJECT / ".state" / "bench" / f"results-{profile.name}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(report, indent=1, default=str))
    args.output.write_text(render(report))
    logger.info("wrote %s and %s in %.0f s", args.output, raw, report["seconds"])
    failed = [
        f"{backend}/{name}"
        for backend, data in report["backends"].items()
        for name, value in data.get("results", {}).items()
        if isinstance(value, dict) and "error" in value
    ]
    if failed:
        logger.error("scenarios that raised: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
