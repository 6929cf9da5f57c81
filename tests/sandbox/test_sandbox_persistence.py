"""The sandbox keeps its data across a restart when given a state file."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import PROJECT, wait_until
from workers.embedded import free_port


def start_sandbox(port: int, state_file: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            str(port),
            "--packages",
            "60",
            "--state-file",
            str(state_file),
        ],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _answers(port), 30, "sandbox to answer")
    return process


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_sandbox/seed", timeout=1).is_success
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_restart_keeps_created_product(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.pickle"
    port = free_port()
    first = start_sandbox(port, state_file)
    created = httpx.post(
        f"http://127.0.0.1:{port}/_sandbox/apex/products",
        json={
            "company": "Green Valley Farms",
            "name": "Kept",
            "product_sku": "KEEP-1",
            "unit": "Gram",
        },
        timeout=10,
    ).json()["product"]
    stop(first)

    second = start_sandbox(port, state_file)
    try:
        tenants = httpx.get(f"http://127.0.0.1:{port}/_sandbox/seed", timeout=10).json()
        token = tenants["tenants"][0]["apex_token"]
        product = httpx.get(
            f"http://127.0.0.1:{port}/apex/api/v1/products/{created['id']}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=10,
        )
    finally:
        stop(second)

    assert state_file.exists()
    assert product.status_code == 200
    assert product.json()["product"]["product_sku"] == "KEEP-1"
