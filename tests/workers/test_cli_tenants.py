"""``apexsync tenants|facilities|secrets|status`` through the real CLI.

Commands that check credentials run against the sandbox; the others run
with the upstream URLs pointing at a closed loopback port, so any request
they made would fail.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from rich.console import Console
from sqlalchemy import select
from typer.testing import CliRunner, Result

from shared.db import session_scope
from shared.models import Facility, SyncRun, Tenant
from shared.secrets import Vault
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import reset_caches
from workers import cli_tenants
from workers.cli import app
from workers.cli_tenants import parse_interval

#: Nothing listens on the discard port, so a request there fails at once.
CLOSED_URL = "http://127.0.0.1:9"


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def offline(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test database, the test key and upstream URLs where nothing answers."""
    variables = {
        "APEXSYNC_ENVIRONMENT": "test",
        "APEXSYNC_DATABASE_URL": clean_db,
        "APEXSYNC_SECRET_KEY": TEST_SECRET_KEY,
        "APEXSYNC_APEX_BASE_URL": f"{CLOSED_URL}/apex/api",
        "APEXSYNC_FLOURISH_BASE_URL": f"{CLOSED_URL}/flourish/external/api",
        "APEXSYNC_HTTP_TIMEOUT": "5",
    }
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    yield clean_db
    for key in variables:
        monkeypatch.delenv(key, raising=False)
    reset_caches()


def store_tenant(name: str = "Offline Farms", token: str = "stored-apex-token") -> int:
    vault = Vault([TEST_SECRET_KEY])
    with session_scope() as session:
        tenant = Tenant(name=name, apex_token_encrypted=vault.encrypt(token))
        session.add(tenant)
        session.flush()
        facility = Facility(
            tenant_id=tenant.id,
            name="Main",
            flourish_facility_id="fac-1",
            flourish_api_key_encrypted=vault.encrypt("stored-flourish-key"),
            wholesale_room="Vault",
            apex_operation_id=5,
        )
        session.add(facility)
        session.flush()
        return facility.id


@pytest.fixture
def seed(service: Any) -> dict[str, Any]:
    response = httpx.get(f"{service.sandbox.url}/_sandbox/seed", timeout=10)
    response.raise_for_status()
    return response.json()


def seeded_tenant(seed: dict[str, Any]) -> dict[str, Any]:
    return seed["tenants"][0]


def add_seeded_tenant(seed: dict[str, Any]) -> Result:
    tenant = seeded_tenant(seed)
    return invoke("tenants", "add", tenant["name"], input=f"{tenant['apex_token']}\n")


def add_seeded_facility(seed: dict[str, Any], **overrides: Any) -> Result:
    tenant = seeded_tenant(seed)
    facility = {**tenant["facilities"][0], **overrides}
    return invoke(
        "facilities",
        "add",
        tenant["name"],
        facility["name"],
        "--flourish-facility-id",
        str(facility["flourish_facility_id"]),
        "--wholesale-room",
        facility["wholesale_room"],
        "--apex-operation-id",
        str(facility["apex_operation_id"]),
        input=f"{facility['flourish_api_key']}\n",
    )


# Against the sandbox ---------------------------------------------------------


def test_tenants_add_checks_and_hides_token(seed: dict[str, Any]) -> None:
    token = seeded_tenant(seed)["apex_token"]

    result = add_seeded_tenant(seed)

    assert result.exit_code == 0, result.output
    assert "added with id" in result.output
    assert token not in result.output


def test_tenants_add_rejected_token_saves_nothing(seed: dict[str, Any]) -> None:
    result = invoke("tenants", "add", "Impostor", input="not-a-real-token\n")

    listed = json.loads(invoke("tenants", "list", "--json").output)
    assert result.exit_code == 1
    assert "Apex rejected the token" in result.output
    assert "not-a-real-token" not in result.output
    assert listed == []


def test_facilities_add_checks_and_hides_key(seed: dict[str, Any]) -> None:
    key = seeded_tenant(seed)["facilities"][0]["flourish_api_key"]
    add_seeded_tenant(seed)

    result = add_seeded_facility(seed)

    assert result.exit_code == 0, result.output
    assert "first sync due now" in result.output
    assert key not in result.output


def test_facilities_add_unknown_facility_id(seed: dict[str, Any]) -> None:
    add_seeded_tenant(seed)

    result = add_seeded_facility(seed, flourish_facility_id="000000000000000000000000")

    assert result.exit_code == 1
    assert "facility '000000000000000000000000' not found" in result.output
    assert "nothing was saved" in result.output


def test_facilities_add_missing_room(seed: dict[str, Any]) -> None:
    add_seeded_tenant(seed)

    result = add_seeded_facility(seed, wholesale_room="No Such Room")

    listed = json.loads(invoke("facilities", "list", "--json").output)
    assert result.exit_code == 1
    assert "Room 'No Such Room' not found" in result.output
    assert listed == []


def test_facilities_add_unknown_operation(seed: dict[str, Any]) -> None:
    add_seeded_tenant(seed)

    result = add_seeded_facility(seed, apex_operation_id=987654)

    assert result.exit_code == 1
    assert "Apex operation 987654 not found" in result.output


def test_status_json_reads_sandbox_credits(seed: dict[str, Any]) -> None:
    add_seeded_tenant(seed)
    add_seeded_facility(seed)

    result = invoke("status", "--json")

    (tenant,) = json.loads(result.output)
    assert result.exit_code == 0
    assert tenant["credits"]["error"] is None
    assert tenant["credits"]["used"] >= 1
    assert tenant["facilities"][0]["last_run"] is None


# Without upstream calls -------------------------------------------------------


def test_secrets_generate_key_prints_fernet_key() -> None:
    result = CliRunner().invoke(app, ["secrets", "generate-key"])

    key = result.stdout.strip()
    assert result.exit_code == 0
    assert Fernet(key.encode())


def test_secrets_rotate_reencrypts_with_first_key(
    offline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    facility_id = store_tenant()
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("APEXSYNC_SECRET_KEY", f"{new_key},{TEST_SECRET_KEY}")
    reset_caches()

    result = invoke("secrets", "rotate", "--json")

    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        assert facility is not None
        stored = facility.flourish_api_key_encrypted
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"tenants": 1, "facilities": 1}
    assert Vault([new_key]).decrypt(stored) == "stored-flourish-key"


def test_secrets_rotate_without_key_fails(
    offline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APEXSYNC_SECRET_KEY")
    reset_caches()

    result = invoke("secrets", "rotate")

    assert result.exit_code == 1
    assert "APEXSYNC_SECRET_KEY" in result.output


def test_status_survives_unreachable_apex(offline: str) -> None:
    store_tenant()

    result = invoke("status", "--json")

    (tenant,) = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert tenant["credits"]["used"] is None
    assert tenant["credits"]["error"]
    assert tenant["facilities"][0]["name"] == "Main"


def test_status_table_shows_last_run(
    offline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_tenants, "stdout", Console(width=250))
    facility_id = store_tenant()
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        assert facility is not None
        session.add(
            SyncRun(
                tenant_id=facility.tenant_id,
                facility_id=facility_id,
                state="succeeded",
                finished_at=datetime.now(UTC),
                fetched=120,
                created=7,
            )
        )

    result = invoke("status")

    assert result.exit_code == 0, result.output
    assert "Offline Farms" in result.output
    assert "fetched 120" in result.output


def test_status_without_tenants_says_so(offline: str) -> None:
    result = invoke("status")

    assert result.exit_code == 0
    assert "No tenants yet" in result.output


def test_tenants_show_hides_token(offline: str) -> None:
    store_tenant()

    result = invoke("tenants", "show", "Offline Farms", "--json")

    shown = json.loads(result.output)
    assert result.exit_code == 0
    assert shown["name"] == "Offline Farms"
    assert "stored-apex-token" not in result.output
    assert not any("token" in key for key in shown)


def test_tenants_show_unknown_fails(offline: str) -> None:
    result = invoke("tenants", "show", "Nobody")

    assert result.exit_code == 1
    assert "Tenant 'Nobody' not found" in result.output


def test_tenants_update_settings_offline(offline: str) -> None:
    store_tenant()

    result = invoke("tenants", "update", "Offline Farms", "--auto-push")

    with session_scope() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == "Offline Farms"))
        assert tenant is not None
        auto_push = tenant.auto_push_orders
    assert result.exit_code == 0, result.output
    assert auto_push is True


def test_tenants_update_rejects_track_mode(offline: str) -> None:
    store_tenant()

    result = invoke("tenants", "update", "Offline Farms", "--quantity-mode", "track")

    assert result.exit_code == 1
    assert "not supported yet" in result.output


def test_tenants_update_without_options_fails(offline: str) -> None:
    store_tenant()

    result = invoke("tenants", "update", "Offline Farms")

    assert result.exit_code == 1
    assert "Nothing to change" in result.output


def test_tenants_update_token_unreachable_keeps_old(offline: str) -> None:
    store_tenant()

    result = invoke(
        "tenants",
        "update",
        "Offline Farms",
        "--ask-apex-token",
        input="fresh-token-1\n",
    )

    with session_scope() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == "Offline Farms"))
        assert tenant is not None
        stored = Vault([TEST_SECRET_KEY]).decrypt(tenant.apex_token_encrypted)
    assert result.exit_code == 1
    assert "Apex could not be reached" in result.output
    assert stored == "stored-apex-token"


def test_facilities_pause_and_resume(offline: str) -> None:
    store_tenant()

    paused = invoke("facilities", "pause", "Main", "--reason", "stock count")
    state_after_pause = facility_state("Main")
    resumed = invoke("facilities", "resume", "Main")

    assert paused.exit_code == 0, paused.output
    assert state_after_pause == "paused"
    assert resumed.exit_code == 0, resumed.output
    assert facility_state("Main") == "active"


def test_facilities_list_filters_by_tenant(offline: str) -> None:
    store_tenant()

    result = invoke("facilities", "list", "--tenant", "Offline Farms", "--json")

    (facility,) = json.loads(result.output)
    assert result.exit_code == 0
    assert facility["wholesale_room"] == "Vault"
    assert "stored-flourish-key" not in result.output


def test_facilities_update_interval_offline(offline: str) -> None:
    store_tenant()

    result = invoke("facilities", "update", "Main", "--interval", "6h", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["sync_interval_seconds"] == 6 * 3600


def facility_state(name: str) -> str:
    with session_scope() as session:
        facility = session.scalar(select(Facility).where(Facility.name == name))
        assert facility is not None
        return facility.state


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("900", 900), ("30m", 1800), ("4h", 14400), ("1d", 86400), (" 2H ", 7200)],
)
def test_parse_interval_units(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


def test_parse_interval_rejects_words() -> None:
    with pytest.raises(Exception, match="Invalid interval"):
        parse_interval("four hours")
