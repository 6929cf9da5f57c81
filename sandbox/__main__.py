"""Serve the sandbox in the foreground: ``python -m sandbox --port 8800``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from sandbox.app import create_app
from sandbox.persistence import load_state, save_state
from sandbox.state import SandboxState


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Serve simulated Apex Trading and Flourish APIs with seeded data.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8800,
        help="TCP port; 0 picks a free one (default: 8800)",
    )
    parser.add_argument(
        "--packages",
        type=int,
        default=1500,
        help="Flourish packages to seed (default: 1500)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="random seed of the data (default: 7)"
    )
    parser.add_argument(
        "--log-level", default="warning", help="uvicorn log level (default: warning)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request"
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="file to load the data from at start and save it to at exit "
        "(default: none; every start seeds afresh)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    if args.state_file is not None and args.state_file.exists():
        state = load_state(args.state_file)
    else:
        state = SandboxState.seeded(packages=args.packages, seed=args.seed)
    base = f"http://{args.host}:{args.port}"
    print(f"Apex API:      {base}/apex/api")
    print(f"Flourish API:  {base}/flourish/external/api")
    print(f"Credentials:   {base}/_sandbox/seed")
    app = create_app(state)
    if args.state_file is not None:
        _save_on_shutdown(app, state, args.state_file)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
    )


def _save_on_shutdown(app: Any, state: SandboxState, path: Path) -> None:
    """Save the data when uvicorn shuts down.

    uvicorn re-raises SIGTERM after its shutdown, so code after ``uvicorn.run``
    never runs; its lifespan shutdown does.
    """
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as value:
            yield value
        save_state(state, path)

    app.router.lifespan_context = lifespan


if __name__ == "__main__":
    main()
