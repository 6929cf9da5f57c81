"""Admin hooks under ``/_sandbox/`` (no auth): seed, stats, faults, data changes.

Requests to these routes are never counted in the statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from sandbox import admin_ops
from sandbox.apex_orders import render_order as render_apex_order
from sandbox.clone import CloneRequest, clone_tenant
from sandbox.demo_orders import generate_demo_orders
from sandbox.errors import ApiError
from sandbox.faults import FaultSpec
from sandbox.flourish_orders import render_order as render_outbound_order
from sandbox.order_book import OrderError, split_order
from sandbox.responses import respond
from sandbox.state import ApexCompany, SandboxState, public
from sandbox.stats import RequestStats

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/_sandbox")

T = TypeVar("T")


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apex: FaultSpec | None = None
    flourish: FaultSpec | None = None


class RateLimitSettings(BaseModel):
    per_second: int = Field(default=15, ge=1)
    enabled: bool = True


class CreditSettings(BaseModel):
    monthly_limit: int | None = Field(default=None, ge=0)
    company: str | None = None
    credits_used: int | None = Field(default=None, ge=0)


class ResetSettings(BaseModel):
    packages: int = Field(default=1500, ge=0)
    seed: int = 7


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def _locked(request: Request, action: Callable[[SandboxState], T]) -> T:
    """Run ``action`` under the state lock, turning lookup and rule errors into 4xx."""
    state = _state(request)
    with state.lock:
        try:
            return action(state)
        except KeyError as exc:
            raise _admin_error(404, str(exc.args[0])) from None
        except (OrderError, ValueError) as exc:
            raise _admin_error(400, str(exc)) from None


def _admin_error(status: int, message: str) -> Exception:
    return ApiError(status, {"detail": message})


@router.get("/seed")
def seed(request: Request) -> Response:
    return respond(_locked(request, lambda s: s.seed_summary()))


@router.post("/reset")
def reset(request: Request, settings: ResetSettings | None = None) -> Response:
    settings = settings or ResetSettings()
    _state(request).reseed(settings.packages, settings.seed)
    return respond(_locked(request, lambda s: s.seed_summary()))


@router.post("/tenants/clone")
def clone(request: Request, body: CloneRequest) -> Response:
    """Copy a seeded tenant's data under new credentials (see ``sandbox.clone``)."""
    return respond(_locked(request, lambda s: clone_tenant(s, body)), 201)


@router.get("/stats")
def stats(request: Request) -> Response:
    return respond(_locked(request, lambda s: s.stats.as_dict()))


@router.post("/stats/reset")
def reset_stats(request: Request) -> Response:
    def clear(state: SandboxState) -> dict[str, Any]:
        state.stats = RequestStats()
        return state.stats.as_dict()

    return respond(_locked(request, clear))


@router.get("/faults")
def get_faults(request: Request) -> Response:
    return respond(
        _locked(
            request, lambda s: {api: f.spec.model_dump() for api, f in s.faults.items()}
        )
    )


@router.put("/faults")
def put_faults(request: Request, settings: FaultSettings) -> Response:
    def configure(state: SandboxState) -> dict[str, Any]:
        for api in ("apex", "flourish"):
            spec = getattr(settings, api)
            if spec is not None:
                state.faults[api].configure(spec)
        logger.info(
            "sandbox faults set apex=%s flourish=%s", settings.apex, settings.flourish
        )
        return {api: f.spec.model_dump() for api, f in state.faults.items()}

    return respond(_locked(request, configure))


@router.delete("/faults")
def clear_faults(request: Request) -> Response:
    def clear(state: SandboxState) -> dict[str, Any]:
        for injector in state.faults.values():
            injector.configure(FaultSpec())
        return {api: f.spec.model_dump() for api, f in state.faults.items()}

    return respond(_locked(request, clear))


@router.put("/apex/rate-limit")
def put_rate_limit(request: Request, settings: RateLimitSettings) -> Response:
    def configure(state: SandboxState) -> dict[str, Any]:
        state.limiter.configure(settings.per_second, settings.enabled)
        return {"per_second": settings.per_second, "enabled": settings.enabled}

    return respond(_locked(request, configure))


@router.put("/apex/credits")
def put_credits(request: Request, settings: CreditSettings) -> Response:
    def configure(state: SandboxState) -> dict[str, Any]:
        companies = _companies(state, settings.company)
        for company in companies:
            company.usage.monthly_limit = settings.monthly_limit
            if settings.credits_used is not None:
                company.usage.credits_used = settings.credits_used
        return {c.name: _credit_view(c) for c in companies}

    return respond(_locked(request, configure))


def _companies(state: SandboxState, name: str | None) -> list[ApexCompany]:
    if name is None:
        return list(state.apex_companies.values())
    company = state.apex_company_named(name)
    if company is None:
        raise KeyError(f"Apex company {name!r} was not found.")
    return [company]


def _credit_view(company: ApexCompany) -> dict[str, Any]:
    return {
        "monthly_limit": company.usage.monthly_limit,
        "credits_used": company.usage.credits_used,
    }


@router.get("/apex/batches")
def apex_batches(request: Request) -> Response:
    return respond({"batches": _locked(request, admin_ops.dump_batches)})


@router.post("/apex/products")
def apex_create_product(request: Request, body: dict[str, Any] = Body(...)) -> Response:
    def create(state: SandboxState) -> dict[str, Any]:
        company = _company_for(state, body)
        return {"product": public(admin_ops.create_product(state, company, body))}

    return respond(_locked(request, create), 201)


def _company_for(state: SandboxState, body: dict[str, Any]) -> ApexCompany:
    token = state.apex_tokens.get(body.get("apex_token") or "")
    if token is not None:
        return state.apex_companies[token.company_id]
    return _companies(state, body.get("company") or "")[0]


@router.get("/apex/orders")
def apex_orders(request: Request) -> Response:
    def dump(state: SandboxState) -> list[dict[str, Any]]:
        return [
            render_apex_order(order, with_items=True) | {"company_name": company.name}
            for company in state.apex_companies.values()
            for order in company.orders.values()
        ]

    return respond({"orders": _locked(request, dump)})


@router.post("/apex/orders/generate")
def apex_generate_orders(request: Request) -> Response:
    return respond(generate_demo_orders(_state(request)))


@router.patch("/apex/orders/{order_id}")
def apex_patch_order(
    order_id: int, request: Request, body: dict[str, Any] = Body(...)
) -> Response:
    def patch(state: SandboxState) -> dict[str, Any]:
        company, order = admin_ops.find_apex_order(state, order_id)
        admin_ops.patch_apex_order(state, company, order, body)
        return {"order": render_apex_order(order, with_items=True)}

    return respond(_locked(request, patch))


@router.post("/apex/orders/{order_id}/split")
def apex_split_order(
    order_id: int, request: Request, body: dict[str, Any] | None = Body(default=None)
) -> Response:
    def split(state: SandboxState) -> dict[str, Any]:
        company, order = admin_ops.find_apex_order(state, order_id)
        child = split_order(state, company, order, (body or {}).get("item_ids"))
        return {
            "order": render_apex_order(child, with_items=True),
            "original": render_apex_order(order, with_items=True),
        }

    return respond(_locked(request, split), 201)


@router.get("/flourish/outbound-orders")
def outbound_orders(request: Request) -> Response:
    def dump(state: SandboxState) -> list[dict[str, Any]]:
        return [
            render_outbound_order(order) | {"company_name": company.name}
            for company in state.flourish_companies.values()
            for order in company.outbound_orders.values()
        ]

    return respond({"orders": _locked(request, dump)})


@router.post("/flourish/outbound-orders/{order_id}/allocate")
def allocate_outbound_order(
    order_id: str, request: Request, body: dict[str, Any] | None = Body(default=None)
) -> Response:
    fraction = Decimal(str((body or {}).get("fraction", 1)))

    def allocate(state: SandboxState) -> dict[str, Any]:
        company, order = admin_ops.find_outbound_order(state, order_id)
        admin_ops.allocate(company, order, fraction)
        return {"order": render_outbound_order(order)}

    return respond(_locked(request, allocate))


@router.patch("/flourish/outbound-orders/{order_id}")
def patch_outbound_order(
    order_id: str, request: Request, body: dict[str, Any] = Body(...)
) -> Response:
    def patch(state: SandboxState) -> dict[str, Any]:
        company, order = admin_ops.find_outbound_order(state, order_id)
        if not body.get("order_status"):
            raise ValueError("order_status is required, e.g. Shipped or Completed.")
        admin_ops.set_outbound_status(company, order, str(body["order_status"]))
        return {"order": render_outbound_order(order)}

    return respond(_locked(request, patch))


@router.patch("/flourish/packages/{package_id}")
def patch_package(
    package_id: str, request: Request, body: dict[str, Any] = Body(...)
) -> Response:
    def patch(state: SandboxState) -> dict[str, Any]:
        if package_id not in state.package_index:
            raise KeyError(f"Package {package_id} was not found.")
        company_id, facility_id = state.package_index[package_id]
        company = state.flourish_companies[company_id]
        package = company.packages[facility_id][package_id]
        return {"package": admin_ops.change_package(company, package, body)}

    return respond(_locked(request, patch))
