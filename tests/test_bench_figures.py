"""Unit checks of the benchmark's figure helpers and report rendering."""

from __future__ import annotations

from typing import Any

from tests.bench_report import _busy_ratio, _growth_verdict, render
from tests.bench_scenarios import _idle_gaps


def _request(started: float, ended: float) -> dict[str, Any]:
    return {"started": started, "ended": ended}


def test_idle_gaps_over_threshold() -> None:
    requests = [_request(0.0, 0.1), _request(0.15, 0.2), _request(1.0, 1.1)]

    gaps = _idle_gaps(requests, threshold=0.2)

    assert len(gaps) == 1
    assert round(gaps[0], 6) == 0.8


def test_idle_gaps_sorted_by_start() -> None:
    requests = [_request(1.0, 1.1), _request(0.0, 0.1)]

    assert [round(gap, 6) for gap in _idle_gaps(requests)] == [0.9]


def test_busy_ratio_excludes_idle_time() -> None:
    run = {
        "apex_requests": 150,
        "seconds": 14.0,
        "idle_gap_seconds": 3.0,
        "lead_seconds": 0.5,
        "tail_seconds": 0.5,
    }

    assert _busy_ratio(run) == 1.0


def _changed(count: int, apex: int, flourish: int) -> dict[str, Any]:
    return {"changed": count, "apex_requests": apex, "flourish_requests": flourish}


def test_growth_verdict_same_cost() -> None:
    sizes = [
        {"changed": [_changed(0, 1, 1), _changed(100, 1, 3)]},
        {"changed": [_changed(0, 1, 1), _changed(100, 1, 3)]},
    ]

    met, reason = _growth_verdict(sizes)

    assert met
    assert "100 changed cost 4 requests" in reason


def test_growth_verdict_too_many_pages() -> None:
    sizes = [{"changed": [_changed(100, 1, 9)]}]

    met, reason = _growth_verdict(sizes)

    assert not met
    assert "more than 3 Flourish pages" in reason


def test_growth_verdict_apex_differs() -> None:
    sizes = [{"changed": [_changed(10, 1, 1)]}, {"changed": [_changed(10, 5, 1)]}]

    met, _reason = _growth_verdict(sizes)

    assert not met


def test_render_marks_quick_and_missing() -> None:
    report = {
        "profile": {
            "name": "quick",
            "rate_runs": [[0.0, 1]],
            "overhead_repeats": 1,
            "dispatch_repeats": 1,
        },
        "backends": {
            "embedded": {"results": {"dispatch": {"error": "Traceback\nBoom: x"}}}
        },
        "seconds": 60.0,
    }

    page = render(report)

    assert page.startswith("# Benchmarks")
    assert "**Quick run**" in page
    assert "The scenario raised: `Boom: x`" in page
    assert "not run" in page
