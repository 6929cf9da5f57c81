"""The Celery application: broker, queues, routing, reliability settings, beat."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu import Queue

from shared.settings import Settings, get_settings

TASK_MODULES = ("tasks.inventory", "tasks.orders", "tasks.maintenance")

#: Queues by kind of work, so a large inventory backlog never delays orders.
QUEUES = ("inventory", "orders", "default")


def reliability_config(settings: Settings) -> dict[str, object]:
    """Return the settings that decide what survives a crash.

    - ``task_acks_late`` with ``task_reject_on_worker_lost``: a message is
      acknowledged only after its task returns, and a task whose process dies
      goes back on the queue instead of being lost.
    - Prefetch 1: a worker reserves no message it is not working on, so a killed
      worker strands at most the one it was running.
    - The visibility timeout is longer than any task and any retry countdown,
      for broker and result backend alike, so Redis never hands a message
      still in progress to a second worker.
    """
    visibility = {"visibility_timeout": settings.broker_visibility_timeout}
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": dict(visibility),
        "result_backend_transport_options": dict(visibility),
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "result_expires": timedelta(hours=24),
        "timezone": "UTC",
        "enable_utc": True,
        "broker_connection_retry_on_startup": True,
    }


def beat_schedule() -> dict[str, dict[str, object]]:
    """Return beat's entries; each one only finds work that is due."""
    minute = 60.0
    return {
        "dispatch-due-syncs": {
            "task": "inventory.dispatch_due_syncs",
            "schedule": minute,
        },
        "poll-orders": {"task": "orders.poll_orders", "schedule": minute},
        "reconcile": {"task": "maintenance.reconcile", "schedule": minute},
    }


def apply_settings(app: Celery, settings: Settings) -> None:
    """Point ``app`` at the settings' Redis and apply the reliability settings."""
    app.conf.update(broker_url=settings.redis_url, result_backend=settings.redis_url)
    app.conf.update(reliability_config(settings))


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from ``settings`` (default: the environment)."""
    settings = settings or get_settings()
    app = Celery("apexsync", include=list(TASK_MODULES))
    apply_settings(app, settings)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue="default",
        task_queues=[Queue(name) for name in QUEUES],
        task_routes={
            "inventory.*": {"queue": "inventory"},
            "orders.*": {"queue": "orders"},
        },
        beat_schedule=beat_schedule(),
        # Celery would otherwise replace the logging set up by shared.logging.
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
    )
    return app


app = create_app()

# Connects the handler that gives every published task a summary of its ids
# for Flower and task events; every process that publishes imports this.
import workers.signals  # noqa: E402, F401
