"""Copy a seeded tenant into a second one with the same data and new credentials.

Multi-tenant tests need two companies whose SKUs, licenses, Flourish
facility ids, package tags, Apex product ids, batch ids and order numbers
are all equal, so that only the tenant tells their rows apart. The copy
gets its own Apex company id, Flourish company id, Apex token and Flourish
keys, and it appears in ``/_sandbox/seed`` like the seeded tenants.

NOTE: ``PATCH /_sandbox/flourish/packages/{id}`` still changes the source's
package only, because package ids are equal in both companies and the
package index keeps the first one.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.catalog import APEX_ABILITIES
from sandbox.seed import READ_ONLY_ABILITIES
from sandbox.state import (
    ApexCompany,
    ApexToken,
    ApexUsage,
    FlourishCompany,
    FlourishKey,
    Record,
    SandboxState,
    TenantSummary,
)

#: Record fields that hold the id of the Apex company that owns the record.
_COMPANY_FIELDS = ("company_id", "seller_company_id", "owning_company_id")


class CloneRequest(BaseModel):
    """Body of ``POST /_sandbox/tenants/clone``.

    ``apex_token`` and ``flourish_api_keys`` (one per facility, in the order
    of ``/_sandbox/seed``) are generated when omitted. ``taxonomy_offset``
    is added to every cannabinoid and terpene id of the copy, so a batch
    sent with the source's ids fails validation in the copy.
    """

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    apex_token: str | None = Field(default=None, min_length=8)
    flourish_api_keys: list[str] = Field(default_factory=list)
    taxonomy_offset: int = Field(default=0, ge=0)


def clone_tenant(state: SandboxState, request: CloneRequest) -> dict[str, Any]:
    """Add a copy of the tenant ``request.source`` and return its seed summary.

    Raises KeyError for an unknown source and ValueError for a name or a
    credential already in use. Expects the state lock.
    """
    source = _summary_named(state, request.source)
    _check_free(state, request)
    if len(request.flourish_api_keys) > len(source.facilities):
        raise ValueError(
            f"Tenant {source.name!r} has {len(source.facilities)} facilities, "
            "so at most that many Flourish API keys can be given."
        )

    apex = _copy_apex_company(state, source, request)
    flourish = _copy_flourish_company(state, source, request.name)
    summary = _issue_credentials(state, source, request, apex, flourish)
    state.cache.clear()
    return _render(summary)


def _summary_named(state: SandboxState, name: str) -> TenantSummary:
    summary = next((tenant for tenant in state.tenants if tenant.name == name), None)
    if summary is None:
        raise KeyError(f"Tenant {name!r} was not found in the sandbox seed.")
    return summary


def _check_free(state: SandboxState, request: CloneRequest) -> None:
    if any(tenant.name == request.name for tenant in state.tenants):
        raise ValueError(f"A tenant named {request.name!r} already exists.")
    if request.apex_token is not None and request.apex_token in state.apex_tokens:
        raise ValueError("The Apex token is already in use.")
    for key in request.flourish_api_keys:
        if key in state.flourish_keys:
            raise ValueError("A Flourish API key is already in use.")
    if len(set(request.flourish_api_keys)) != len(request.flourish_api_keys):
        raise ValueError("The Flourish API keys must differ from each other.")


def _copy_apex_company(
    state: SandboxState, source: TenantSummary, request: CloneRequest
) -> ApexCompany:
    original = state.apex_companies[source.apex_company_id]
    company = copy.deepcopy(original)
    company.id = max(state.apex_companies) + 1
    company.name = request.name
    company.record.update(id=company.id, name=request.name)
    company.usage = ApexUsage()

    for records in (company.products, company.batches, company.buyers, company.orders):
        _rehome(records.values(), original.id, company.id)
    if request.taxonomy_offset:
        _shift_taxonomy(company, request.taxonomy_offset)

    state.apex_companies[company.id] = company
    return company


def _rehome(records: Any, old_id: int, new_id: int) -> None:
    for record in records:
        for field in _COMPANY_FIELDS:
            if record.get(field) == old_id:
                record[field] = new_id


def _shift_taxonomy(company: ApexCompany, offset: int) -> None:
    """Renumber cannabinoids and terpenes, and every reference to them."""
    company.cannabinoids = _shifted(company.cannabinoids, offset)
    company.terpenes = _shifted(company.terpenes, offset)
    for product in company.products.values():
        if product.get("predominate_canabinoid_id") is not None:
            product["predominate_canabinoid_id"] += offset
    for batch in company.batches.values():
        for entry in (*batch.get("_cannabinoids", ()), *batch.get("_terpenes", ())):
            entry["id"] += offset


def _shifted(records: dict[int, Record], offset: int) -> dict[int, Record]:
    shifted = {}
    for record_id, record in records.items():
        record["id"] = record_id + offset
        shifted[record_id + offset] = record
    return shifted


def _copy_flourish_company(
    state: SandboxState, source: TenantSummary, name: str
) -> FlourishCompany:
    facility_ids = {str(f["flourish_facility_id"]) for f in source.facilities}
    original = next(
        company
        for company in state.flourish_companies.values()
        if facility_ids <= set(company.facilities)
    )
    company = copy.deepcopy(original)
    company.id = f"{original.id}-copy-{len(state.flourish_companies) + 1}"
    company.name = name
    state.flourish_companies[company.id] = company
    return company


def _issue_credentials(
    state: SandboxState,
    source: TenantSummary,
    request: CloneRequest,
    apex: ApexCompany,
    flourish: FlourishCompany,
) -> TenantSummary:
    token = request.apex_token or f"apx_{secrets.token_hex(20)}"
    readonly = f"apx_ro_{secrets.token_hex(16)}"
    state.apex_tokens[token] = ApexToken(token, request.name, apex.id, APEX_ABILITIES)
    state.apex_tokens[readonly] = ApexToken(
        readonly, f"{request.name} (read-only)", apex.id, READ_ONLY_ABILITIES
    )

    summary = TenantSummary(
        request.name, apex.id, token, readonly, source.grams_per_pound
    )
    keys = list(request.flourish_api_keys)
    for facility in source.facilities:
        key = keys.pop(0) if keys else f"fl_{secrets.token_hex(20)}"
        label = f"{facility['name']} ({request.name})"
        state.flourish_keys[key] = FlourishKey(key, label, flourish.id)
        summary.facilities.append({**facility, "flourish_api_key": key})
    state.tenants.append(summary)
    return summary


def _render(summary: TenantSummary) -> dict[str, Any]:
    return {
        "name": summary.name,
        "apex_token": summary.apex_token,
        "apex_readonly_token": summary.apex_readonly_token,
        "apex_company_id": summary.apex_company_id,
        "grams_per_pound": summary.grams_per_pound,
        "facilities": [dict(facility) for facility in summary.facilities],
    }
