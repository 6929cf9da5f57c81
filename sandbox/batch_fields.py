"""Validation and storage of the writable fields of an Apex batch."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandbox.clock import cents, is_date, money, to_decimal
from sandbox.state import ApexCompany, Record, SandboxState

STRING_FIELDS = (
    "name", "lot_number", "zone_number", "sack_number", "seeded", "storage_location",
    "line_note", "description", "sample_quantity_label",
)  # fmt: skip
DATE_FIELDS = (
    "harvest_date", "dry_date", "extraction_date", "production_date", "best_by_date",
    "test_date", "in_stock_expected_date",
)  # fmt: skip
NUMBER_FIELDS = ("quantity", "sample_size")
#: NOTE: the Apex OpenAPI document types potency as a number. The sandbox
#: returns it as a string, like cannabinoid measurements, so clients must parse
#: numbers leniently as live payloads require.
POTENCY_FIELDS = ("predominate_canabinoid_min_or_only", "predominate_canabinoid_max")
BOOL_FIELDS = (
    "hold", "back_order", "restricted", "archived", "thc_limit", "allow_samples",
    "track_sample_quantity", "true_hold",
)  # fmt: skip
MONEY_FIELDS = (
    "listing_price", "listing_price_base_unit", "minimum_sales_price",
    "minimum_sales_price_base_unit", "cost_of_goods", "true_cost", "sample_price",
)  # fmt: skip
MEASUREMENT_TYPES = ("%", "Mg")

Errors = dict[str, list[str]]


def batch_defaults() -> Record:
    """Return every writable field unset: a POST sets left-out fields null or false."""
    record: Record = dict.fromkeys(STRING_FIELDS + DATE_FIELDS + NUMBER_FIELDS)
    record.update(dict.fromkeys(POTENCY_FIELDS))
    record["predominate_canabinoid_unit"] = None
    record.update(dict.fromkeys(BOOL_FIELDS, False))
    for field in MONEY_FIELDS:
        record.update({field: None, f"{field}_raw": None})
    return record


def _label(field: str) -> str:
    return field.replace("_", " ")


def validate_fields(
    company: ApexCompany, body: dict[str, Any], *, creating: bool
) -> Errors:
    """Return Laravel-style errors for the known fields of a create or update body."""
    errors: Errors = {}
    for field, value in body.items():
        message = _field_error(field, value, creating)
        if message:
            errors[field] = [message]
    for field, taxonomy in (
        ("cannabinoids", company.cannabinoids),
        ("terpenes", company.terpenes),
    ):
        if field in body:
            errors.update(_list_errors(field, body[field], taxonomy))
    return errors


def _field_error(field: str, value: Any, creating: bool) -> str | None:
    if field == "name" and value in (None, "") and not creating:
        return "The name field is required."
    if value is None or value == "":
        return None
    if field in STRING_FIELDS:
        return _string_error(field, value)
    if field in DATE_FIELDS and not is_date(value):
        return f"The {_label(field)} field must be a valid date."
    if field in NUMBER_FIELDS + POTENCY_FIELDS + MONEY_FIELDS:
        return _number_error(field, value)
    if field in (*BOOL_FIELDS, "disable_inventory_tracking") and not _is_bool(value):
        return f"The {_label(field)} field must be true or false."
    if field == "predominate_canabinoid_unit" and value not in MEASUREMENT_TYPES:
        return f"The selected {_label(field)} is invalid."
    return None


def _string_error(field: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"The {_label(field)} field must be a string."
    if len(value) > 255:
        return f"The {_label(field)} field must not be greater than 255 characters."
    return None


def _number_error(field: str, value: Any) -> str | None:
    number = to_decimal(value)
    if number is None:
        return f"The {_label(field)} field must be a number."
    if number < 0:
        return f"The {_label(field)} field must be at least 0."
    return None


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value in (0, 1)
    return isinstance(value, str) and value.lower() in ("0", "1", "true", "false")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true")
    return bool(value)


def _list_errors(field: str, value: Any, taxonomy: dict[int, Record]) -> Errors:
    if value in (None, ""):
        return {}
    if not isinstance(value, list):
        return {field: [f"The {field} field must be an array."]}

    errors: Errors = {}
    seen: set[int] = set()
    for index, entry in enumerate(value):
        entry = entry if isinstance(entry, dict) else {}
        errors.update(_entry_errors(field, index, entry, taxonomy, seen))
    return errors


def _entry_errors(
    field: str, index: int, entry: dict[str, Any], taxonomy: dict[int, Record],
    seen: set[int],
) -> Errors:  # fmt: skip
    """Check one cannabinoid or terpene entry; ``seen`` collects ids for duplicates."""
    prefix = f"{field}.{index}"
    id_key = "cannabinoid_id" if field == "cannabinoids" else "terpene_id"
    ref = entry.get(id_key)
    ref_id = ref if isinstance(ref, int) and not isinstance(ref, bool) else None

    messages: dict[str, str] = {}
    if ref_id is None or ref_id not in taxonomy:
        messages[id_key] = f"The selected {prefix}.{id_key} is invalid."
    elif ref_id in seen:
        messages[id_key] = f"The {prefix}.{id_key} field has a duplicate value."
    seen.add(ref_id or 0)
    if to_decimal(entry.get("measurement")) is None:
        messages["measurement"] = f"The {prefix}.measurement field must be a number."
    if entry.get("measurement_type") not in MEASUREMENT_TYPES:
        messages["measurement_type"] = (
            f"The selected {prefix}.measurement_type is invalid."
        )
    return {f"{prefix}.{key}": [message] for key, message in messages.items()}


def apply_fields(
    state: SandboxState, company: ApexCompany, record: Record, body: dict[str, Any]
) -> None:
    """Store the known fields of a validated body; unknown fields are ignored."""
    for field, value in body.items():
        empty = value is None or value == ""
        if (
            field in STRING_FIELDS + DATE_FIELDS
            or field == "predominate_canabinoid_unit"
        ):
            record[field] = None if empty else value
        elif field in NUMBER_FIELDS:
            record[field] = None if empty else _json_number(value)
        elif field in POTENCY_FIELDS:
            record[field] = None if empty else format(to_decimal(value), "f")
        elif field in BOOL_FIELDS:
            record[field] = False if empty else _truthy(value)
        elif field == "disable_inventory_tracking":
            record["unlimited_quantity"] = False if empty else _truthy(value)
        elif field in MONEY_FIELDS:
            _set_money(record, field, None if empty else to_decimal(value))
        elif field in ("cannabinoids", "terpenes"):
            _replace_list(state, company, record, field, [] if empty else value)


def _json_number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def _set_money(record: Record, field: str, dollars: Decimal | None) -> None:
    # NOTE: the Apex OpenAPI document types price inputs as integers but its prose
    # allows "100" or "100.00", and does not say whether they are dollars or
    # cents. The sandbox reads them as dollars and returns cents in `_raw`.
    if dollars is None:
        record.update({field: None, f"{field}_raw": None})
        return
    raw = cents(dollars)
    record.update({field: money(raw), f"{field}_raw": raw})


def _replace_list(
    state: SandboxState,
    company: ApexCompany,
    record: Record,
    field: str,
    entries: list[Any],
) -> None:
    """Replace the whole cannabinoid or terpene list, as Apex does on every write."""
    is_cannabinoid = field == "cannabinoids"
    taxonomy = company.cannabinoids if is_cannabinoid else company.terpenes
    sequence = "apex_batch_cannabinoid" if is_cannabinoid else "apex_batch_terpene"
    link_key = "batch_cannabinoid_id" if is_cannabinoid else "batch_terpene_id"
    id_key = "cannabinoid_id" if is_cannabinoid else "terpene_id"

    rendered = []
    for entry in entries:
        ref = taxonomy[entry[id_key]]
        item = {
            "id": ref["id"],
            link_key: str(state.ids.next(sequence)),
            "batch_id": record["id"],
            "product_id": record["product_id"],
            "name": ref["name"],
            "display_name": ref["display_name"],
            "measurement": format(to_decimal(entry["measurement"]), "f"),
            "measurement_type": entry["measurement_type"],
        }
        if is_cannabinoid:
            item["abbreviation"] = ref["abbreviation"]
        rendered.append(item)
    record[f"_{field}"] = rendered
