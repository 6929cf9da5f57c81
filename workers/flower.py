"""``apexsync flower``: Flower against the project's broker, with basic auth.

Flower lists tasks with their arguments, which are ids only, so its pages
contain no credentials. It also lets a visitor revoke tasks and stop
workers, so it must not be reachable without a password. On a loopback
address the password is optional because only local users can connect.
"""

from __future__ import annotations

import ipaddress
import logging
import os

import typer

from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Flower keeps every task it hears of in memory up to this count (its own
#: default is 100,000); past it the oldest are dropped.
DEFAULT_MAX_TASKS = 10_000

#: Seconds after which a worker that stopped sending heartbeats leaves the list.
DEFAULT_PURGE_OFFLINE_SECONDS = 600


class FlowerAuthError(Exception):
    """Flower would listen on a public address without basic auth."""


def is_loopback(address: str) -> bool:
    """Tell whether ``address`` accepts connections from this machine only.

    An empty address means every interface, and a host name other than
    ``localhost`` is treated as public because it may resolve to anything.
    """
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def basic_auth_credentials(settings: Settings, address: str) -> str | None:
    """Return ``user:password`` for Flower's basic auth, or None on loopback.

    Raises FlowerAuthError when the user or password is missing and
    ``address`` is not loopback, or when the password cannot be passed to
    Flower intact.
    """
    user = settings.flower_user
    password = (
        settings.flower_password.get_secret_value() if settings.flower_password else ""
    )
    if user and password:
        _check_credentials_format(user, password)
        return f"{user}:{password}"

    if is_loopback(address):
        return None
    raise FlowerAuthError(
        f"Flower would listen on {address or 'every interface'} without a "
        "password. Set APEXSYNC_FLOWER_USER and APEXSYNC_FLOWER_PASSWORD, or "
        "use --address 127.0.0.1."
    )


def _check_credentials_format(user: str, password: str) -> None:
    # Flower splits its list of allowed users on "," and each entry on the
    # first ":", so a comma anywhere or a colon in the user name breaks it.
    if "," in user or "," in password or ":" in user:
        raise FlowerAuthError(
            "APEXSYNC_FLOWER_USER must not contain ':' or ',' and "
            "APEXSYNC_FLOWER_PASSWORD must not contain ','."
        )


def flower_argv(
    address: str, port: int, max_tasks: int, purge_offline_seconds: int
) -> list[str]:
    """Return the ``celery flower`` arguments; credentials never go in argv."""
    return [
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--max_tasks={max_tasks}",
        f"--purge_offline_workers={purge_offline_seconds}",
    ]


def flower_command(
    address: str = typer.Option(
        "127.0.0.1",
        "--address",
        help="Address to listen on. Any address but loopback needs "
        "APEXSYNC_FLOWER_USER and APEXSYNC_FLOWER_PASSWORD.",
    ),
    port: int = typer.Option(5555, "--port", min=1, max=65535, help="TCP port."),
    max_tasks: int = typer.Option(
        DEFAULT_MAX_TASKS,
        "--max-tasks",
        min=100,
        help="Tasks Flower keeps in memory; older ones are dropped.",
    ),
    purge_offline_workers: int = typer.Option(
        DEFAULT_PURGE_OFFLINE_SECONDS,
        "--purge-offline-workers",
        min=1,
        help="Seconds after which an offline worker is removed from the list.",
    ),
) -> None:
    """Start Flower, the web monitor of tasks and workers, on the broker."""
    settings = get_settings()
    try:
        credentials = basic_auth_credentials(settings, address)
    except FlowerAuthError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc

    _set_flower_environment(credentials)
    logger.info(
        "starting flower address=%s port=%s basic_auth=%s",
        address,
        port,
        credentials is not None,
    )

    from workers.app import app as celery_app

    code = celery_app.start(
        flower_argv(address, port, max_tasks, purge_offline_workers)
    )
    raise typer.Exit(code or 0)


def _set_flower_environment(credentials: str | None) -> None:
    # Flower reads FLOWER_* variables itself. Passing the password this way
    # keeps it out of the process list, which shows argv to every local user.
    if credentials is not None:
        os.environ["FLOWER_BASIC_AUTH"] = credentials


if __name__ == "__main__":
    typer.run(flower_command)
