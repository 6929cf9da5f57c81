"""In-memory data of both simulated APIs, guarded by one lock.

Records are JSON-ready dicts in the shape the API returns. Keys that start with
``_`` are internal (parsed timestamps, links) and never leave the sandbox.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.faults import FaultInjector
from sandbox.ratelimit import SlidingWindowLimiter
from sandbox.stats import RequestStats

Record = dict[str, Any]


def public(record: Record) -> Record:
    """Return a copy of a record without its internal keys."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


@dataclass
class ApexToken:
    token: str
    label: str
    company_id: int
    abilities: tuple[str, ...]


@dataclass
class ApexUsage:
    """Credit and request counters of one Apex company for the current month."""

    monthly_limit: int | None = None
    credits_used: int = 0
    request_count: int = 0
    top_level_resources_returned: int = 0
    billable_nested_resource_count: int = 0
    throttled_request_count: int = 0
    error_4xx_count: int = 0
    error_5xx_count: int = 0

    def exhausted(self) -> bool:
        return (
            self.monthly_limit is not None and self.credits_used >= self.monthly_limit
        )


@dataclass
class ApexCompany:
    id: int
    name: str
    prefix: str
    record: Record
    operations: dict[int, Record] = field(default_factory=dict)
    units: dict[int, Record] = field(default_factory=dict)
    cannabinoids: dict[int, Record] = field(default_factory=dict)
    terpenes: dict[int, Record] = field(default_factory=dict)
    categories: dict[int, Record] = field(default_factory=dict)
    products: dict[int, Record] = field(default_factory=dict)
    batches: dict[int, Record] = field(default_factory=dict)
    buyers: dict[int, Record] = field(default_factory=dict)
    deal_flows: dict[int, Record] = field(default_factory=dict)
    orders: dict[int, Record] = field(default_factory=dict)
    demo_order_ids: list[int] = field(default_factory=list)
    usage: ApexUsage = field(default_factory=ApexUsage)
    versions: Counter[str] = field(default_factory=Counter)

    def unit_named(self, name: str) -> Record:
        return next(unit for unit in self.units.values() if unit["name"] == name)

    def bump(self, resource: str) -> None:
        self.versions[resource] += 1


@dataclass
class FlourishKey:
    key: str
    label: str
    company_id: str


@dataclass
class FlourishCompany:
    id: str
    name: str
    facilities: dict[str, Record] = field(default_factory=dict)
    items: dict[str, Record] = field(default_factory=dict)
    lab_results: dict[str, Record] = field(default_factory=dict)
    destinations: dict[str, Record] = field(default_factory=dict)
    sales_reps: dict[int, Record] = field(default_factory=dict)
    #: Packages per facility id, in creation order (the listing order).
    packages: dict[str, dict[str, Record]] = field(default_factory=dict)
    outbound_orders: dict[str, Record] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)

    def bump(self, resource: str) -> None:
        self.versions[resource] += 1


@dataclass
class TenantSummary:
    """Credentials and ids of one seeded tenant, as ``/_sandbox/seed`` shows them."""

    name: str
    apex_company_id: int
    apex_token: str
    apex_readonly_token: str
    grams_per_pound: str
    facilities: list[dict[str, Any]] = field(default_factory=list)


class IdSequence:
    """Global id counters per kind of record, like database sequences."""

    def __init__(self, starts: dict[str, int]) -> None:
        self._next = dict(starts)

    def next(self, kind: str) -> int:
        value = self._next.setdefault(kind, 1)
        self._next[kind] = value + 1
        return value


ID_STARTS = {
    "apex_product": 5001,
    "apex_batch": 90001,
    "apex_buyer": 4401,
    "apex_order": 100101,
    "apex_order_item": 700001,
    "apex_status": 3101,
    "apex_deal_flow": 61,
    "apex_batch_cannabinoid": 20001,
    "apex_batch_terpene": 30001,
    "flourish_item": 101,
    "flourish_lab_result": 1101,
    "flourish_sales_rep": 1,
    "flourish_order": 41,
    "flourish_order_line": 9001,
}


class QueryCache:
    """Filtered row lists keyed by query and data version, so pages are O(page)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], list[Record]] = OrderedDict()

    def rows(
        self, key: tuple[Any, ...], build: Callable[[], Iterable[Record]]
    ) -> list[Record]:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]

        rows = list(build())
        self._entries[key] = rows
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return rows

    def clear(self) -> None:
        self._entries.clear()


class SandboxState:
    """All data, counters and fault settings of one sandbox."""

    def __init__(self, seed: int = 7) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.package_target = 0
        self.apex_companies: dict[int, ApexCompany] = {}
        self.apex_tokens: dict[str, ApexToken] = {}
        self.flourish_companies: dict[str, FlourishCompany] = {}
        self.flourish_keys: dict[str, FlourishKey] = {}
        self.package_index: dict[str, tuple[str, str]] = {}
        self.tenants: list[TenantSummary] = []
        self.ids = IdSequence(ID_STARTS)
        self.cache = QueryCache()
        self.stats = RequestStats()
        self.limiter = SlidingWindowLimiter()
        self.faults = {"apex": FaultInjector(), "flourish": FaultInjector()}
        self.created_at: datetime | None = None

    @classmethod
    def seeded(cls, packages: int = 1500, seed: int = 7) -> SandboxState:
        """Build a sandbox with the deterministic seed data."""
        from sandbox.seed import populate

        state = cls(seed)
        populate(state, packages)
        return state

    def reseed(self, packages: int, seed: int) -> None:
        """Replace all data with a fresh seed; counters and faults are reset too."""
        fresh = SandboxState.seeded(packages=packages, seed=seed)
        with self.lock:
            for name, value in vars(fresh).items():
                if name != "lock":
                    setattr(self, name, value)

    def apex_company_named(self, name: str) -> ApexCompany | None:
        return next((c for c in self.apex_companies.values() if c.name == name), None)

    def all_packages(self) -> Iterable[Record]:
        for company in self.flourish_companies.values():
            for packages in company.packages.values():
                yield from packages.values()

    def seed_summary(self) -> dict[str, Any]:
        tenants = []
        for tenant in self.tenants:
            tenants.append(
                {
                    "name": tenant.name,
                    "apex_token": tenant.apex_token,
                    "apex_readonly_token": tenant.apex_readonly_token,
                    "apex_company_id": tenant.apex_company_id,
                    "grams_per_pound": tenant.grams_per_pound,
                    "facilities": [dict(f) for f in tenant.facilities],
                }
            )
        return {
            "tenants": tenants,
            "packages": self.package_target,
            "seed": self.seed,
            "apex_base_path": "/apex/api",
            "flourish_base_path": "/flourish/external/api",
        }
