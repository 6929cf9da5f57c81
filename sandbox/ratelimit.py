"""Apex's per-token rate limit: 15 requests in any one-second window.

The Apex OpenAPI document states the limit and the headers. Every response
carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``. A request over the
limit gets 429 with ``Retry-After`` (seconds) and ``X-RateLimit-Reset`` (epoch).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

APEX_REQUESTS_PER_SECOND = 15


@dataclass
class LimitDecision:
    allowed: bool
    headers: dict[str, str]


@dataclass
class SlidingWindowLimiter:
    """Sliding one-second window per key. A rejected request does not use a slot."""

    per_second: int = APEX_REQUESTS_PER_SECOND
    enabled: bool = True
    windows: dict[str, deque[float]] = field(default_factory=dict)

    def check(self, key: str, now: float, epoch: float) -> LimitDecision:
        """Admit or reject one request of ``key`` arriving at monotonic ``now``."""
        window = self.windows.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()

        if not self.enabled or len(window) < self.per_second:
            window.append(now)
            remaining = max(self.per_second - len(window), 0)
            return LimitDecision(True, self._headers(remaining))

        wait = window[0] + 1.0 - now
        headers = self._headers(0)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        headers["X-RateLimit-Reset"] = str(math.ceil(epoch + wait))
        return LimitDecision(False, headers)

    def configure(self, per_second: int, enabled: bool) -> None:
        self.per_second = per_second
        self.enabled = enabled
        self.windows.clear()

    def _headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.per_second),
            "X-RateLimit-Remaining": str(remaining),
        }
