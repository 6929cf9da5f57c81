"""The Celery settings that decide what survives a crash, and the retry policy.

Each setting is checked on the configured app and, where Redis is involved,
on a real broker connection. The fault tests show the same settings at work
against real worker processes.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.settings import Settings
from tasks.base import BASE_RETRY_SECONDS, SyncTask, retry_countdown
from tests.helpers import reset_caches
from workers.app import QUEUES, app, reliability_config


@pytest.fixture
def settings() -> Iterator[Settings]:
    """The settings of this process, applied to the app."""
    reset_caches()
    from shared.settings import get_settings

    yield get_settings()


def project_tasks() -> dict[str, SyncTask]:
    app.loader.import_default_modules()
    return {
        name: task for name, task in app.tasks.items() if not name.startswith("celery.")
    }


# --- acknowledgement and prefetch ---------------------------------------------


def test_acks_late_enabled(settings: Settings) -> None:
    assert app.conf.task_acks_late is True


def test_reject_on_worker_lost_enabled(settings: Settings) -> None:
    assert app.conf.task_reject_on_worker_lost is True


def test_prefetch_multiplier_is_one(settings: Settings) -> None:
    assert app.conf.worker_prefetch_multiplier == 1


# --- visibility timeout -------------------------------------------------------


def test_visibility_timeout_exceeds_time_limit(settings: Settings) -> None:
    broker = app.conf.broker_transport_options["visibility_timeout"]
    backend = app.conf.result_backend_transport_options["visibility_timeout"]

    assert broker > settings.task_time_limit
    assert backend > settings.task_time_limit


def test_visibility_timeout_exceeds_retry_countdown(settings: Settings) -> None:
    broker = app.conf.broker_transport_options["visibility_timeout"]
    backend = app.conf.result_backend_transport_options["visibility_timeout"]

    assert broker > settings.max_retry_countdown
    assert backend > settings.max_retry_countdown


def test_visibility_timeout_follows_settings() -> None:
    chosen = Settings(
        task_soft_time_limit=8,
        task_time_limit=10,
        max_retry_countdown=5,
        visibility_timeout=15,
    )

    config = reliability_config(chosen)

    assert config["broker_transport_options"] == {"visibility_timeout": 15}
    assert config["result_backend_transport_options"] == {"visibility_timeout": 15}


def test_visibility_default_doubles_longest_wait() -> None:
    chosen = Settings(task_time_limit=300, max_retry_countdown=900)

    assert chosen.broker_visibility_timeout == 1800


def test_settings_reject_short_visibility() -> None:
    with pytest.raises(ValidationError, match="APEXSYNC_VISIBILITY_TIMEOUT"):
        Settings(task_time_limit=300, max_retry_countdown=600, visibility_timeout=600)


def test_settings_reject_visibility_below_time_limit() -> None:
    with pytest.raises(ValidationError, match="APEXSYNC_VISIBILITY_TIMEOUT"):
        Settings(
            task_soft_time_limit=100,
            task_time_limit=900,
            max_retry_countdown=60,
            visibility_timeout=800,
        )


def test_broker_channel_uses_visibility(
    settings: Settings, clean_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEXSYNC_REDIS_URL", clean_redis)
    reset_caches()
    from shared.settings import get_settings

    expected = get_settings().broker_visibility_timeout
    with app.connection_for_write() as connection:
        channel = connection.default_channel

        assert channel.visibility_timeout == expected
    reset_caches()


# --- time limits, beat, results -----------------------------------------------


def test_settings_reject_soft_above_hard() -> None:
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT"):
        Settings(task_soft_time_limit=300, task_time_limit=300)


def test_time_limits_set_globally(settings: Settings) -> None:
    assert app.conf.task_soft_time_limit == settings.task_soft_time_limit
    assert app.conf.task_time_limit == settings.task_time_limit
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit


@pytest.mark.parametrize("name", sorted(project_tasks()))
def test_task_has_both_time_limits(name: str) -> None:
    task = project_tasks()[name]

    assert task.soft_time_limit is not None
    assert task.time_limit is not None
    assert 0 < task.soft_time_limit < task.time_limit


def test_beat_runs_in_utc(settings: Settings) -> None:
    assert app.conf.timezone == "UTC"
    assert app.conf.enable_utc is True


def test_results_expire_within_a_day(settings: Settings) -> None:
    expires = app.conf.result_expires

    assert isinstance(expires, timedelta)
    assert timedelta(0) < expires <= timedelta(days=1)


def test_beat_schedules_reconciler(settings: Settings) -> None:
    entries = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert "maintenance.reconcile" in entries


# --- every task: base class and queue -----------------------------------------


@pytest.mark.parametrize("name", sorted(project_tasks()))
def test_task_uses_sync_task(name: str) -> None:
    assert isinstance(project_tasks()[name], SyncTask)


@pytest.mark.parametrize("name", sorted(project_tasks()))
def test_task_routes_to_declared_queue(name: str) -> None:
    route = app.amqp.router.route({}, name)

    assert route["queue"].name in QUEUES


def test_order_tasks_have_own_queue() -> None:
    queues = {
        name: app.amqp.router.route({}, name)["queue"].name for name in project_tasks()
    }

    assert {queues[name] for name in queues if name.startswith("orders.")} == {"orders"}
    assert {queues[name] for name in queues if name.startswith("inventory.")} == {
        "inventory"
    }


def test_project_tasks_registered() -> None:
    names = set(project_tasks())

    assert "inventory.create_batches" in names
    assert "orders.push_order" in names
    assert "maintenance.reconcile" in names


# --- retry countdown ----------------------------------------------------------


def test_countdown_honours_retry_after() -> None:
    for _ in range(200):
        countdown = retry_countdown(0, retry_after=7.0, maximum=600)

        assert 7.0 <= countdown <= 8.0


def test_countdown_caps_retry_after() -> None:
    assert retry_countdown(0, retry_after=3600.0, maximum=600) == 600


@pytest.mark.parametrize("retries", [0, 1, 2, 3, 4])
def test_countdown_doubles_per_retry(retries: int) -> None:
    ceiling = BASE_RETRY_SECONDS * 2**retries

    for _ in range(200):
        countdown = retry_countdown(retries, retry_after=None, maximum=600)

        assert ceiling / 2 <= countdown <= ceiling


def test_countdown_never_exceeds_maximum() -> None:
    for retries in range(0, 30):
        assert retry_countdown(retries, retry_after=None, maximum=5) <= 5


def test_countdown_jitter_spreads_values() -> None:
    values = [retry_countdown(3, retry_after=None, maximum=600) for _ in range(200)]

    assert len(set(values)) > 150
    assert statistics.pstdev(values) > 1.0
