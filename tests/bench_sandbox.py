"""The sandbox of the benchmarks, in its own process, with a request log.

``python -m tests.bench_sandbox --port N --packages N`` serves the sandbox
app behind a wrapper that logs every Apex and Flourish request (arrival and
end times, method, path, query, status, and for replays the body and the
credential headers). Its own routes under ``/_bench/``:

- ``GET /_bench/requests`` (``?full=1`` adds bodies and credentials),
  ``POST /_bench/requests/reset``;
- ``GET /_bench/credits``: credits and requests per Apex company;
- ``POST /_bench/credentials`` ``{"tenant": name, "count": n}``: issue ``n``
  extra Apex tokens and Flourish keys for a seeded tenant's companies;
- ``GET /_bench/packages?facility_id=F``: package ids of one facility;
- ``GET /_bench/cpu``: CPU seconds this process has used.

The sandbox runs in its own process so that its CPU time never competes for
the benchmark process's interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

from sandbox.catalog import APEX_ABILITIES
from sandbox.gateway import api_of
from sandbox.server import SandboxServer
from sandbox.state import ApexToken, FlourishKey, SandboxState

logger = logging.getLogger(__name__)

#: Headers the replay's own client sets; every other request header is kept.
CLIENT_HEADERS = (
    b"host",
    b"content-length",
    b"connection",
    b"user-agent",
    b"accept-encoding",
)


@dataclass
class LoggedRequest:
    """One request to the simulated APIs, as the benchmarks read it back."""

    started: float
    ended: float
    api: str
    method: str
    path: str
    query: str
    status: int
    body: str
    headers: dict[str, str]

    def brief(self) -> dict[str, Any]:
        data = asdict(self)
        del data["body"], data["headers"]
        return data


class RecordingApp:
    """ASGI wrapper that logs API requests and serves the ``/_bench/`` routes."""

    def __init__(self, inner: Any, state: SandboxState) -> None:
        self.inner = inner
        self.state = state
        self.log: list[LoggedRequest] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        if scope["path"].startswith("/_bench/"):
            await self._admin(scope, receive, send)
            return
        api = api_of(scope["path"])
        if api is None:
            await self.inner(scope, receive, send)
            return
        await self._recorded(api, scope, receive, send)

    async def _recorded(self, api: str, scope: Any, receive: Any, send: Any) -> None:
        started = time.time()
        chunks: list[bytes] = []
        status = [0]

        async def keep_body() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def keep_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.inner(scope, keep_body, keep_status)
        finally:
            self.log.append(_logged(api, scope, started, status[0], b"".join(chunks)))

    async def _admin(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            status, payload = self._route(scope["method"], scope["path"], body, query)
        except (KeyError, ValueError) as exc:
            status, payload = 400, {"detail": str(exc)}
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(data)).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": data})

    def _route(
        self, method: str, path: str, body: bytes, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        if (method, path) == ("GET", "/_bench/requests"):
            full = query.get("full") == ["1"]
            return 200, [asdict(r) if full else r.brief() for r in self.log]
        if (method, path) == ("POST", "/_bench/requests/reset"):
            self.log = []
            return 200, {"cleared": True}
        if (method, path) == ("GET", "/_bench/credits"):
            return 200, self._credits()
        if (method, path) == ("POST", "/_bench/credentials"):
            request = json.loads(body or b"{}")
            return 200, self._issue(str(request["tenant"]), int(request["count"]))
        if (method, path) == ("GET", "/_bench/packages"):
            return 200, self._package_ids(query["facility_id"][0])
        if (method, path) == ("GET", "/_bench/cpu"):
            times = os.times()
            return 200, {"cpu_seconds": times.user + times.system}
        return 404, {"detail": f"{method} {path} is not a benchmark route"}

    def _credits(self) -> dict[str, Any]:
        with self.state.lock:
            return {
                company.name: asdict(company.usage)
                for company in self.state.apex_companies.values()
            }

    def _package_ids(self, facility_id: str) -> list[str]:
        with self.state.lock:
            for company in self.state.flourish_companies.values():
                if facility_id in company.packages:
                    return list(company.packages[facility_id])
        raise KeyError(f"Flourish facility {facility_id} was not found.")

    def _issue(self, tenant_name: str, count: int) -> list[dict[str, str]]:
        """Issue extra credentials of a seeded tenant: one Apex token and one
        Flourish key per extra tenant, each counted under its own label."""
        with self.state.lock:
            tenant = next(t for t in self.state.tenants if t.name == tenant_name)
            seeded_key = tenant.facilities[0]["flourish_api_key"]
            flourish_company = self.state.flourish_keys[seeded_key].company_id
            issued = []
            for index in range(count):
                label = f"bench-{index + 1:03d}"
                token = f"apx_bench_{os.urandom(16).hex()}"
                key = f"fl_bench_{os.urandom(16).hex()}"
                self.state.apex_tokens[token] = ApexToken(
                    token, label, tenant.apex_company_id, APEX_ABILITIES
                )
                self.state.flourish_keys[key] = FlourishKey(
                    key, label, flourish_company
                )
                issued.append({"label": label, "apex_token": token, "api_key": key})
            return issued


def _logged(
    api: str, scope: Any, started: float, status: int, body: bytes
) -> LoggedRequest:
    headers = {
        name.decode(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() not in CLIENT_HEADERS
    }
    return LoggedRequest(
        started=started,
        ended=time.time(),
        api=api,
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        status=status,
        body=body.decode("utf-8", errors="replace"),
        headers=headers,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_sandbox")
    parser.add_argument("--port", type=int, required=True, help="loopback TCP port")
    parser.add_argument(
        "--packages", type=int, default=1500, help="Flourish packages to seed"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    server = SandboxServer(port=args.port, packages=args.packages)
    server.app = RecordingApp(server.app, server.state)  # type: ignore[assignment]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server.start()
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
