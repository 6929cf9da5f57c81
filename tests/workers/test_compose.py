"""compose.yaml against the CLI and .env.example."""

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read compose.yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

#: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; "$$" escapes.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?\-+][^}]*)?\}")

LONG_RUNNING = (
    "redis",
    "postgres",
    "worker-inventory",
    "worker-orders",
    "flower",
    "sandbox",
)
APP_SERVICES = ("worker-inventory", "worker-orders", "beat", "flower")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def cli() -> Any:
    from workers.cli import app

    return typer.main.get_command(app)


def apexsync_argv(service: dict[str, Any]) -> list[str] | None:
    command = service.get("command")
    if not isinstance(command, list) or not command or command[0] != "apexsync":
        return None
    return [str(part) for part in command[1:]]


def resolve(cli: Any, argv: list[str]) -> tuple[Any, list[str]]:
    """Walk groups by name; return the leaf command and the remaining arguments."""
    # Typer ships its own copy of click, so groups are recognised by `commands`.
    command = cli
    rest = list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        child = command.commands.get(name)
        assert child is not None, f"`apexsync {' '.join(argv)}`: no command {name!r}"
        command = child
    return command, rest


def option_names(command: Any) -> set[str]:
    return {name for param in command.params for name in getattr(param, "opts", [])}


def documented_variables() -> set[str]:
    # A variable counts as documented on a line "NAME=" or "# NAME=".
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall(ENV_EXAMPLE.read_text()))


def test_compose_has_every_service(services: dict[str, Any]) -> None:
    expected = {"redis", "postgres", "migrate", "beat", "flower", "sandbox"}
    expected |= {"worker-inventory", "worker-orders"}

    assert expected <= set(services)


def test_compose_redis_keeps_messages(services: dict[str, Any]) -> None:
    command = " ".join(services["redis"]["command"])

    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_compose_service_has_healthcheck(services: dict[str, Any], name: str) -> None:
    assert services[name].get("healthcheck", {}).get("test")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_app_waits_for_dependencies(
    services: dict[str, Any], name: str
) -> None:
    depends = services[name]["depends_on"]

    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_compose_migrate_waits_for_postgres(services: dict[str, Any]) -> None:
    depends = services["migrate"]["depends_on"]

    assert depends["postgres"]["condition"] == "service_healthy"
    assert apexsync_argv(services["migrate"]) == ["db", "upgrade"]


def test_compose_sandbox_only_in_profile(services: dict[str, Any]) -> None:
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert all("profiles" not in services[name] for name in APP_SERVICES)


def test_compose_workers_split_queues(services: dict[str, Any]) -> None:
    inventory = apexsync_argv(services["worker-inventory"])
    orders = apexsync_argv(services["worker-orders"])

    assert inventory == ["worker", "--queues", "inventory,default"]
    assert orders == ["worker", "--queues", "orders"]


def test_compose_flower_requires_basic_auth(services: dict[str, Any]) -> None:
    environment = services["flower"]["environment"]

    assert "APEXSYNC_FLOWER_USER" in environment
    assert "APEXSYNC_FLOWER_PASSWORD" in environment
    assert ":?" in environment["APEXSYNC_FLOWER_PASSWORD"]


def test_compose_commands_exist_in_cli(services: dict[str, Any], cli: Any) -> None:
    checked = 0
    for name, service in services.items():
        argv = apexsync_argv(service)
        if argv is None:
            continue

        command, rest = resolve(cli, argv)
        options = [arg.split("=", 1)[0] for arg in rest if arg.startswith("--")]
        unknown = set(options) - option_names(command)
        assert not unknown, (
            f"service {name}: `apexsync {' '.join(argv)}` has no {unknown}"
        )
        checked += 1

    assert checked >= len(APP_SERVICES) + 1


def test_compose_variables_are_documented(compose: dict[str, Any]) -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    missing = used - documented_variables()

    assert used, "compose.yaml uses no variables; the pattern is likely wrong"
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_compose_required_variables_are_uncommented() -> None:
    # Variables compose cannot start without appear as real lines to fill in.
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    lines = set(
        re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    )

    assert required
    assert required <= lines


def test_compose_sandbox_arguments_parse(services: dict[str, Any]) -> None:
    from sandbox.__main__ import parse_args

    command = services["sandbox"]["command"]
    options = parse_args(command[3:])

    assert command[:3] == ["python", "-m", "sandbox"]
    assert options.host == "0.0.0.0"
    assert options.port == 8080
