"""Request counts per API, per caller label and per path, for tests and benchmarks."""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

_ID_SEGMENT = re.compile(r"\d")
_VERSION_SEGMENT = re.compile(r"^v\d+$")


def path_template(path: str) -> str:
    """Replace id segments (any segment with a digit, except ``v1``) by ``{id}``."""
    segments = []
    for segment in path.split("/"):
        is_id = _ID_SEGMENT.search(segment) and not _VERSION_SEGMENT.match(segment)
        segments.append("{id}" if is_id else segment)
    return "/".join(segments)


@dataclass
class ApiCounters:
    """Counters of one simulated API."""

    total: int = 0
    by_caller: Counter[str] = field(default_factory=Counter)
    max_per_second: dict[str, int] = field(default_factory=dict)
    per_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    windows: dict[str, deque[float]] = field(default_factory=dict)

    def record(self, caller: str, method: str, path: str, now: float) -> None:
        self.total += 1
        self.by_caller[caller] += 1
        self.per_path[f"{method} {path_template(path)}"] += 1
        self._record_window(caller, now)

    def _record_window(self, caller: str, now: float) -> None:
        # The window contains the arrival times of the last second, so its length
        # after appending is the count of requests in (now - 1 s, now].
        window = self.windows.setdefault(caller, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        window.append(now)
        self.max_per_second[caller] = max(
            self.max_per_second.get(caller, 0), len(window)
        )

    def as_dict(self, caller_key: str) -> dict[str, Any]:
        return {
            "total": self.total,
            caller_key: dict(self.by_caller),
            "max_per_second": dict(self.max_per_second),
            "status_429": self.by_status[429],
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "per_path": dict(sorted(self.per_path.items())),
        }


@dataclass
class RequestStats:
    """Counts every request that reaches the Apex or Flourish routes."""

    apex: ApiCounters = field(default_factory=ApiCounters)
    flourish: ApiCounters = field(default_factory=ApiCounters)

    def counters(self, api: str) -> ApiCounters:
        return self.apex if api == "apex" else self.flourish

    def as_dict(self) -> dict[str, Any]:
        return {
            "apex": self.apex.as_dict("by_token"),
            "flourish": self.flourish.as_dict("by_key"),
        }
