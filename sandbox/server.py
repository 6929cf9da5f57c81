"""Run the sandbox with uvicorn in a background thread, for tests and the demo."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from sandbox.app import create_app
from sandbox.state import SandboxState

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class SandboxServer:
    """A seeded sandbox served on 127.0.0.1; port 0 picks a free port.

    Use ``start()``/``stop()`` or a ``with`` block. ``state`` is the live data,
    so tests may read or change it directly (under ``state.lock``).
    """

    def __init__(
        self,
        port: int = 0,
        packages: int = 1500,
        seed: int = 7,
        *,
        state: SandboxState | None = None,
        log_level: str = "warning",
        access_log: bool = False,
    ) -> None:
        self.port = port
        self.state = state or SandboxState.seeded(packages=packages, seed=seed)
        self.app = create_app(self.state)
        self.log_level = log_level
        self.access_log = access_log
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def apex_base_url(self) -> str:
        return self.url + "/apex/api"

    @property
    def flourish_base_url(self) -> str:
        return self.url + "/flourish/external/api"

    def start(self, timeout: float = 10.0) -> SandboxServer:
        """Bind the port, start uvicorn in a thread and wait until it accepts."""
        self._socket = self._bind()
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=self.access_log,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._wait_until_started(timeout)
        logger.info("sandbox started url=%s", self.url)
        return self

    def _bind(self) -> socket.socket:
        # asyncio (base_events._set_nodelay) turns on TCP_NODELAY only for
        # sockets whose proto is TCP. With proto 0, every small response waits
        # for the client's delayed ACK, about 40 ms on Linux.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        return sock

    def _wait_until_started(self, timeout: float) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the sandbox on port {self.port} failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the sandbox did not start within {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread; safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        logger.info("sandbox stopped url=%s", self.url)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
