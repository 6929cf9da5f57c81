"""``apexsync dlq``: list, show, replay and discard dead letters."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from shared.db import session_scope
from shared.deadletters import (
    ARGS_KEY,
    CHAIN_KEY,
    ReplayRejected,
    mark_replayed,
    reopen_for_replay,
)
from shared.models import DeadLetter
from shared.settings import get_settings

dlq_app = typer.Typer(help="Dead letters: tasks that gave up.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True, soft_wrap=True)

#: Seconds the replay flag lives in Redis; a replay that has not run by then
#: leaves its dead letter "replayed" instead of closing it.
REPLAY_FLAG_TTL = 7 * 24 * 3600

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.")
]


def letter_dict(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "state": letter.state,
        "task_name": letter.task_name,
        "task_id": letter.task_id,
        "arguments": letter.arguments,
        "tenant_id": letter.tenant_id,
        "facility_id": letter.facility_id,
        "exception_type": letter.exception_type,
        "message": letter.message,
        "upstream_status": letter.upstream_status,
        "request_excerpt": letter.request_excerpt,
        "response_excerpt": letter.response_excerpt,
        "attempts": letter.attempts,
        "first_failed_at": letter.first_failed_at.isoformat(),
        "last_failed_at": letter.last_failed_at.isoformat(),
        "replay_task_id": letter.replay_task_id,
        "traceback": letter.traceback,
    }


def _load(session: Any, letter_id: int) -> DeadLetter:
    letter = session.get(DeadLetter, letter_id)
    if letter is None:
        _exit_with(
            f"Dead letter {letter_id} not found. "
            "List them with `apexsync dlq list --all`."
        )
    return letter


@dlq_app.command("list")
def dlq_list(
    show_all: bool = typer.Option(
        False, "--all", help="Include replayed, resolved, discarded."
    ),
    tenant: int | None = typer.Option(None, help="Only this tenant id."),
    as_json: JsonOption = False,
) -> None:
    """List dead letters, open ones only unless --all."""
    with session_scope() as session:
        statement = select(DeadLetter).order_by(DeadLetter.id)
        if not show_all:
            statement = statement.where(DeadLetter.state == "open")
        if tenant is not None:
            statement = statement.where(DeadLetter.tenant_id == tenant)
        rows = [letter_dict(letter) for letter in session.scalars(statement)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Dead letters")
    for column in (
        "id",
        "state",
        "task",
        "tenant",
        "facility",
        "error",
        "status",
        "attempts",
        "last failed",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["state"],
            row["task_name"],
            str(row["tenant_id"] or "-"),
            str(row["facility_id"] or "-"),
            f"{row['exception_type']}: {row['message'][:80]}",
            str(row["upstream_status"] or "-"),
            str(row["attempts"]),
            row["last_failed_at"][:19],
        )
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    letter_id: int = typer.Argument(..., help="Dead letter id."),
    as_json: JsonOption = False,
) -> None:
    """Show one dead letter with its arguments, excerpts and traceback."""
    with session_scope() as session:
        row = letter_dict(_load(session, letter_id))
    if as_json:
        print(json.dumps(row, indent=2))
        return
    for key, value in row.items():
        if key == "traceback":
            continue
        console.print(f"[bold]{key}[/bold]: {value}")
    if row["traceback"]:
        console.print("[bold]traceback[/bold]:")
        console.print(row["traceback"], markup=False, highlight=False)


@dlq_app.command("replay")
def dlq_replay(
    letter_id: int = typer.Argument(..., help="Dead letter id."),
    as_json: JsonOption = False,
) -> None:
    """Send the same idempotent task again; a success closes the dead letter.

    The failed sync run or order push of the letter is reopened first, so the
    task finds its work again. The rest of a page chain is sent with it.
    """
    from celery.utils import uuid

    from shared.redis_client import get_redis
    from tasks.base import REPLAY_KEY_PREFIX
    from workers.app import app as celery_app

    deadline = timedelta(seconds=get_settings().run_deadline_seconds)
    task_id = uuid()
    with session_scope() as session:
        letter = _load(session, letter_id)
        if letter.state not in ("open", "replayed"):
            _exit_with(
                f"Dead letter {letter_id} is {letter.state}; only open or replayed "
                "ones can be replayed."
            )
        try:
            reopened = reopen_for_replay(session, letter, deadline)
        except ReplayRejected as exc:
            _exit_with(str(exc))
        arguments = dict(letter.arguments)
        args = arguments.pop(ARGS_KEY, [])
        chain = arguments.pop(CHAIN_KEY, None)
        # With this flag set, the task closes the dead letter when it succeeds.
        get_redis().set(REPLAY_KEY_PREFIX + task_id, str(letter_id), ex=REPLAY_FLAG_TTL)
        mark_replayed(session, letter, task_id)
        task_name = letter.task_name

    # Published after the commit, so the task finds the reopened run or push.
    celery_app.send_task(
        task_name, args=args, kwargs=arguments, task_id=task_id, chain=chain
    )
    if as_json:
        print(json.dumps({"id": letter_id, "task_id": task_id, "reopened": reopened}))
        return
    detail = f"; reopened {reopened}" if reopened else ""
    console.print(f"Dead letter {letter_id} replayed as task {task_id}{detail}.")


def _exit_with(message: str) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(letter_id: int = typer.Argument(..., help="Dead letter id.")) -> None:
    """Mark a dead letter as dealt with, without running anything."""
    with session_scope() as session:
        letter = _load(session, letter_id)
        letter.state = "discarded"
    console.print(f"Dead letter {letter_id} discarded.")
