"""``apexsync flower``: basic auth rules, and a real Flower process behind them."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from shared.settings import Settings, get_settings
from workers.flower import (
    DEFAULT_MAX_TASKS,
    FlowerAuthError,
    basic_auth_credentials,
    flower_argv,
    flower_command,
    is_loopback,
)

PROJECT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ops", "flower-pass-42"
START_TIMEOUT = 60.0


def settings(user: str | None = None, password: str | None = None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        flower_user=user,
        flower_password=SecretStr(password) if password else None,
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("10.1.2.3", False),
        ("flower.example.org", False),
    ],
)
def test_is_loopback_classifies_address(address: str, expected: bool) -> None:
    assert is_loopback(address) is expected


def test_credentials_refused_on_public_address() -> None:
    with pytest.raises(FlowerAuthError, match="APEXSYNC_FLOWER_PASSWORD"):
        basic_auth_credentials(settings(), "0.0.0.0")


def test_credentials_refused_without_password() -> None:
    with pytest.raises(FlowerAuthError, match="without a password"):
        basic_auth_credentials(settings(user=USER), "0.0.0.0")


def test_credentials_optional_on_loopback() -> None:
    assert basic_auth_credentials(settings(), "127.0.0.1") is None


def test_credentials_used_when_configured() -> None:
    credentials = basic_auth_credentials(settings(USER, PASSWORD), "0.0.0.0")

    assert credentials == f"{USER}:{PASSWORD}"


def test_credentials_reject_comma_in_password() -> None:
    with pytest.raises(FlowerAuthError, match="must not contain ','"):
        basic_auth_credentials(settings(USER, "a,b"), "127.0.0.1")


def test_flower_argv_bounds_memory() -> None:
    argv = flower_argv("127.0.0.1", 5555, DEFAULT_MAX_TASKS, 600)

    assert argv[0] == "flower"
    assert f"--max_tasks={DEFAULT_MAX_TASKS}" in argv
    assert "--purge_offline_workers=600" in argv
    assert not any(PASSWORD in arg for arg in argv)


def test_flower_command_refuses_public_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APEXSYNC_FLOWER_USER", raising=False)
    monkeypatch.delenv("APEXSYNC_FLOWER_PASSWORD", raising=False)
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(flower_command)

    result = CliRunner().invoke(app, ["--address", "0.0.0.0", "--port", "5599"])
    get_settings.cache_clear()

    assert result.exit_code == 1
    assert "without a password" in result.output


# A real Flower process --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def flower_url(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("flower")
    port = free_port()
    env = {
        **os.environ,
        "APEXSYNC_ENVIRONMENT": "test",
        "APEXSYNC_REDIS_URL": redis_url,
        "APEXSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'flower.db'}",
        "APEXSYNC_STATE_DIR": str(tmp_path),
        "APEXSYNC_FLOWER_USER": USER,
        "APEXSYNC_FLOWER_PASSWORD": PASSWORD,
    }
    command = [sys.executable, "-m", "workers.flower", "--address", "127.0.0.1"]
    command += ["--port", str(port)]
    log_path = tmp_path / "flower.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(process, url, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_until_listening(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flower exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail(f"flower did not listen within {START_TIMEOUT} s:\n{log.read_text()}")


@pytest.mark.redis
@pytest.mark.processes
def test_flower_rejects_anonymous_request(flower_url: str) -> None:
    response = httpx.get(f"{flower_url}/", timeout=10)

    assert response.status_code == 401


@pytest.mark.redis
@pytest.mark.processes
def test_flower_rejects_wrong_password(flower_url: str) -> None:
    response = httpx.get(f"{flower_url}/", auth=(USER, "wrong"), timeout=10)

    assert response.status_code == 401


@pytest.mark.redis
@pytest.mark.processes
def test_flower_serves_authenticated_request(flower_url: str) -> None:
    response = httpx.get(f"{flower_url}/", auth=(USER, PASSWORD), timeout=10)

    assert response.status_code == 200
    assert "Flower" in response.text
