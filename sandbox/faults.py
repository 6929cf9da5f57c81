"""Fault injection settings per API and the seeded choice of a fault per request."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal["error", "429", "drop", "timeout", "malformed", "lose"]


class LoseRule(BaseModel):
    """Handle (commit) the next ``count`` matching requests, then lose the response.

    ``mode`` "502" responds 502 with an empty body, and "drop" closes the
    connection.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = "POST"
    path_contains: str
    count: int = Field(default=1, ge=1)
    mode: Literal["502", "drop"] = "502"


class FaultSpec(BaseModel):
    """Faults of one API. Rates are probabilities per request and add up to at most 1.

    ``timeout_rate`` handles the request, then delays the response for
    ``timeout_seconds`` (past the client's timeout). ``path_contains`` and
    ``methods`` restrict latency and the random faults to matching requests;
    ``lose_response`` rules match on their own.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0, ge=0)
    error_rate: float = Field(default=0, ge=0, le=1)
    error_status: int = Field(default=500, ge=500, le=599)
    rate_429: float = Field(default=0, ge=0, le=1)
    retry_after: int = Field(default=1, ge=1)
    timeout_rate: float = Field(default=0, ge=0, le=1)
    timeout_seconds: float = Field(default=35.0, ge=0)
    drop_rate: float = Field(default=0, ge=0, le=1)
    malformed_rate: float = Field(default=0, ge=0, le=1)
    lose_response: list[LoseRule] = Field(default_factory=list)
    path_contains: str | None = None
    methods: list[str] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _rates_fit_one_draw(self) -> FaultSpec:
        if sum(rate for _, rate in self.rates()) > 1:
            raise ValueError("the fault rates must add up to at most 1")
        return self

    def rates(self) -> list[tuple[FaultKind, float]]:
        return [
            ("error", self.error_rate),
            ("429", self.rate_429),
            ("drop", self.drop_rate),
            ("timeout", self.timeout_rate),
            ("malformed", self.malformed_rate),
        ]


@dataclass
class FaultPlan:
    """Plan for one request: a delay first, then at most one fault."""

    latency_seconds: float = 0.0
    kind: FaultKind | None = None
    lose_mode: str = "502"


class FaultInjector:
    """Draws faults for one API from a seeded random generator."""

    def __init__(self) -> None:
        self.configure(FaultSpec())

    def configure(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed if spec.seed is not None else 0)
        self.lose_rules = [rule.model_copy() for rule in spec.lose_response]

    def plan(self, method: str, path: str) -> FaultPlan:
        """Choose the fault of one request. Call it under the state lock."""
        applies = self._applies(method, path)
        latency = self.spec.latency_ms / 1000 if applies else 0.0

        lose = self._take_lose_rule(method, path)
        if lose is not None:
            return FaultPlan(latency, "lose", lose.mode)

        if not applies:
            return FaultPlan(latency)
        return FaultPlan(latency, self._draw())

    def _applies(self, method: str, path: str) -> bool:
        spec = self.spec
        if spec.path_contains is not None and spec.path_contains not in path:
            return False
        methods = [name.upper() for name in spec.methods or []]
        return not methods or method.upper() in methods

    def _take_lose_rule(self, method: str, path: str) -> LoseRule | None:
        for rule in self.lose_rules:
            if rule.method.upper() == method.upper() and rule.path_contains in path:
                rule.count -= 1
                if rule.count == 0:
                    self.lose_rules.remove(rule)
                return rule
        return None

    def _draw(self) -> FaultKind | None:
        draw = self.rng.random()
        threshold = 0.0
        for kind, rate in self.spec.rates():
            threshold += rate
            if draw < threshold:
                return kind
        return None
