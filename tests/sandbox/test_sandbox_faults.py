"""Fault choice, the sliding-window rate limit and request statistics as units."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandbox.faults import FaultInjector, FaultSpec, LoseRule
from sandbox.ratelimit import SlidingWindowLimiter
from sandbox.stats import ApiCounters, path_template


def test_injector_without_faults_plans_nothing() -> None:
    plan = FaultInjector().plan("GET", "/v1/items")

    assert plan.kind is None
    assert plan.latency_seconds == 0


def test_injector_draws_same_faults_per_seed() -> None:
    first, second = FaultInjector(), FaultInjector()
    spec = FaultSpec(error_rate=0.3, rate_429=0.3, seed=11)
    first.configure(spec)
    second.configure(spec)

    kinds = [first.plan("GET", "/v1/items").kind for _ in range(50)]

    assert kinds == [second.plan("GET", "/v1/items").kind for _ in range(50)]
    assert {"error", "429", None} == set(kinds)


def test_injector_respects_path_filter() -> None:
    injector = FaultInjector()
    injector.configure(FaultSpec(error_rate=1.0, path_contains="/v2/batches"))

    assert injector.plan("GET", "/v1/products").kind is None
    assert injector.plan("GET", "/v2/batches").kind == "error"


def test_lose_rule_fires_count_times() -> None:
    injector = FaultInjector()
    rule = LoseRule(method="POST", path_contains="/v2/batches", count=2)
    injector.configure(FaultSpec(lose_response=[rule]))

    kinds = [injector.plan("POST", "/v2/batches").kind for _ in range(3)]

    assert kinds == ["lose", "lose", None]


def test_lose_rule_ignores_other_methods() -> None:
    injector = FaultInjector()
    injector.configure(FaultSpec(lose_response=[LoseRule(path_contains="/v2/batches")]))

    assert injector.plan("GET", "/v2/batches").kind is None
    assert injector.plan("POST", "/v2/batches").kind == "lose"


def test_fault_rates_above_one_rejected() -> None:
    with pytest.raises(ValidationError):
        FaultSpec(error_rate=0.6, drop_rate=0.6)


def test_limiter_admits_up_to_limit() -> None:
    limiter = SlidingWindowLimiter(per_second=3)

    decisions = [limiter.check("t", now=10.0, epoch=1000.0) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[2].headers["X-RateLimit-Remaining"] == "0"


def test_limiter_rejection_has_retry_after() -> None:
    limiter = SlidingWindowLimiter(per_second=1)
    limiter.check("t", now=10.0, epoch=1000.0)

    rejected = limiter.check("t", now=10.2, epoch=1000.2)

    assert rejected.allowed is False
    assert rejected.headers["Retry-After"] == "1"
    assert rejected.headers["X-RateLimit-Reset"] == "1001"


def test_limiter_window_slides_after_one_second() -> None:
    limiter = SlidingWindowLimiter(per_second=1)
    limiter.check("t", now=10.0, epoch=1000.0)

    later = limiter.check("t", now=11.0, epoch=1001.0)

    assert later.allowed is True


def test_limiter_keeps_tokens_apart() -> None:
    limiter = SlidingWindowLimiter(per_second=1)
    limiter.check("a", now=10.0, epoch=1000.0)

    assert limiter.check("b", now=10.0, epoch=1000.0).allowed is True
    assert limiter.check("a", now=10.0, epoch=1000.0).allowed is False


def test_limiter_disabled_admits_everything() -> None:
    limiter = SlidingWindowLimiter(per_second=1, enabled=False)

    decisions = [limiter.check("t", now=10.0, epoch=1000.0) for _ in range(5)]

    assert all(d.allowed for d in decisions)


def test_counters_track_max_per_second() -> None:
    counters = ApiCounters()
    for now in (1.0, 1.2, 1.4, 2.3, 2.5, 3.6):
        counters.record("tenant", "GET", "/v1/items", now)

    assert counters.max_per_second["tenant"] == 3
    assert counters.total == 6


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v2/batches/90001", "/v2/batches/{id}"),
        ("/v1/packages/1A4060300100000000000001", "/v1/packages/{id}"),
        ("/v2/lab-test-results/1101", "/v2/lab-test-results/{id}"),
        ("/v1/welcome", "/v1/welcome"),
    ],
)
def test_path_template_hides_ids(path: str, template: str) -> None:
    assert path_template(path) == template
