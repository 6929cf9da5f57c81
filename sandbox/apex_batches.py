"""Apex v2 batches: list, read, create and sparse update.

Write rules from the Apex OpenAPI document:

- Create needs ``name``, ``product_id`` and ``operation_id``, and those two ids
  cannot change later.
- An update changes only the fields it sends. An empty string sets a field to
  null.
- ``cannabinoids`` and ``terpenes`` replace the whole list.
- Fields the API does not know are ignored silently.
- A write bumps the batch's ``updated_at`` and never its product's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from sandbox.apex_common import (
    ApexCaller,
    TimeWindow,
    ability,
    cached_rows,
    find,
    flag,
    int_list,
    json_body,
    list_response,
)
from sandbox.batch_fields import apply_fields, batch_defaults, validate_fields
from sandbox.clock import apex_time, utcnow
from sandbox.errors import apex_validation
from sandbox.responses import respond
from sandbox.state import ApexCompany, Record, public

router = APIRouter(prefix="/apex/api")

REQUIRED_ON_CREATE = ("name", "product_id", "operation_id")


def render_batch(
    record: Record, *, full: bool = False, with_operation: bool = False,
    operation: Record | None = None, with_cannabinoids: bool = False,
    with_terpenes: bool = False,
) -> Record:  # fmt: skip
    body = public(record)
    if full or with_cannabinoids:
        body["cannabinoids"] = [dict(c) for c in record["_cannabinoids"]]
    if full or with_terpenes:
        body["terpenes"] = [dict(t) for t in record["_terpenes"]]
    if with_operation and operation is not None:
        body["operation"] = _operation_summary(operation)
    return body


def _operation_summary(operation: Record) -> Record:
    keys = (
        "id",
        "name",
        "city",
        "industry",
        "state_license",
        "turnaround_time",
        "state",
    )
    return {key: operation.get(key) for key in keys} | {"country": operation["country"]}


@router.get("/v2/batches")
def list_batches(
    request: Request, caller: ApexCaller = ability("view:batches")
) -> Response:
    window = TimeWindow.from_request(request, updated_required=True)
    ids = set(int_list(request, "ids"))
    product_ids = set(int_list(request, "product_ids"))
    operation_ids = set(int_list(request, "operation_ids"))
    archived = flag(request, "archived")

    def build() -> list[Record]:
        return [
            b
            for b in caller.company.batches.values()
            if window.matches(b)
            and (not ids or b["id"] in ids)
            and (not product_ids or b["product_id"] in product_ids)
            and (not operation_ids or b["operation_id"] in operation_ids)
            and (archived is None or b["archived"] == archived)
        ]

    rows = cached_rows(caller, request, "batches", build)
    return list_response(
        request, caller, "batches", rows, _list_renderer(request, caller)
    )


def _list_renderer(request: Request, caller: ApexCaller) -> Any:
    with_operation = bool(flag(request, "with_operation"))
    with_cannabinoids = bool(flag(request, "with_cannabinoids"))
    with_terpenes = bool(flag(request, "with_terpenes"))
    operations = caller.company.operations

    def render(record: Record) -> Record:
        return render_batch(
            record,
            with_operation=with_operation,
            operation=operations.get(record["operation_id"]),
            with_cannabinoids=with_cannabinoids,
            with_terpenes=with_terpenes,
        )

    return render


@router.get("/v2/batches/{batch_id}")
def get_batch(batch_id: str, caller: ApexCaller = ability("view:batches")) -> Response:
    with caller.state.lock:
        record = find(caller.company.batches, batch_id, "Batch not found")
        body = render_batch(record, full=True)
    caller.charge(1)
    return respond({"batch": body})


@router.post("/v2/batches")
async def create_batch(
    request: Request, caller: ApexCaller = ability("update:batches")
) -> Response:
    body = await json_body(request)
    with caller.state.lock:
        record = insert_batch(caller, body)
        rendered = render_batch(record, full=True)
    caller.charge(1)
    return respond({"batch": rendered}, 201)


@router.api_route("/v2/batches/{batch_id}", methods=["PUT", "PATCH"])
async def update_batch(
    batch_id: str, request: Request, caller: ApexCaller = ability("update:batches")
) -> Response:
    body = await json_body(request)
    with caller.state.lock:
        record = find(caller.company.batches, batch_id, "Batch not found")
        changes = {
            k: v for k, v in body.items() if k not in ("product_id", "operation_id")
        }
        errors = validate_fields(caller.company, changes, creating=False)
        if errors:
            raise apex_validation(errors)
        apply_fields(caller.state, caller.company, record, changes)
        touch_batch(caller, record)
        rendered = render_batch(record, full=True)
    caller.charge(1)
    return respond({"batch": rendered})


def insert_batch(caller: ApexCaller, body: dict[str, Any]) -> Record:
    """Validate a create body and store the new batch; call under the state lock."""
    company = caller.company
    errors = _reference_errors(caller, body)
    errors.update(validate_fields(company, body, creating=True))
    if errors:
        raise apex_validation(errors)

    batch_id = caller.state.ids.next("apex_batch")
    record = new_batch_record(
        batch_id, company.id, int(body["product_id"]), int(body["operation_id"])
    )
    apply_fields(caller.state, company, record, body)
    company.batches[batch_id] = record
    touch_batch(caller, record, created=True)
    return record


def _reference_errors(caller: ApexCaller, body: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for field in REQUIRED_ON_CREATE:
        if body.get(field) in (None, ""):
            errors[field] = [f"The {field.replace('_', ' ')} field is required."]

    references = {
        "product_id": caller.company.products,
        "operation_id": caller.company.operations,
    }
    for field, records in references.items():
        value = body.get(field)
        if field in errors:
            continue
        if not _is_int(value) or int(str(value)) not in records:
            errors[field] = [f"The selected {field.replace('_', ' ')} is invalid."]
    return errors


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def new_batch_record(
    batch_id: int, company_id: int, product_id: int, operation_id: int
) -> Record:
    return {
        "id": batch_id,
        "uuid": f"batch-{company_id}-{batch_id}",
        "product_id": product_id,
        "operation_id": operation_id,
        "company_id": company_id,
        **batch_defaults(),
        "unlimited_quantity": False,
        "unit_price": {"message": "Price is calculated per buyer pricing tier."},
        "_cannabinoids": [],
        "_terpenes": [],
    }


def touch_batch(caller: ApexCaller, record: Record, *, created: bool = False) -> None:
    now = utcnow()
    if created:
        record.update(created_at=apex_time(now), _created=now)
    stamp_batch(caller.company, record, now)


def stamp_batch(
    company: ApexCompany, record: Record, now: datetime | None = None
) -> None:
    """Bump a batch's updated_at and the company's batch list version."""
    now = now or utcnow()
    record.update(updated_at=apex_time(now), _updated=now)
    company.bump("batches")
