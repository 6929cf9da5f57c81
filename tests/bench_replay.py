"""Replay logged HTTP requests in a plain loop: the baseline of pipeline overhead.

``python -m tests.bench_replay REQUESTS.json BASE_URL`` sends each request of
the file in order, one at a time, over one keep-alive ``httpx.Client``, and
prints ``{"seconds": s, "requests": n, "errors": n}``. It runs in its own
process so that it shares no interpreter lock with the benchmark or the
sandbox.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def replay(requests: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    """Send ``requests`` in order; return the wall time and the error count."""
    errors: list[str] = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        started = time.perf_counter()
        for request in requests:
            path = request["path"]
            if request["query"]:
                path += "?" + request["query"]
            response = client.request(
                request["method"],
                path,
                headers=request["headers"],
                content=request["body"].encode() if request["body"] else None,
            )
            response.read()
            if response.status_code >= 400:
                errors.append(
                    f"{request['method']} {request['path']} {response.status_code}"
                )
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "requests": len(requests),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m tests.bench_replay REQUESTS.json BASE_URL")
    requests = json.loads(Path(args[0]).read_text())
    print(json.dumps(replay(requests, args[1])))


if __name__ == "__main__":
    main()
