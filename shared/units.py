"""Quantity and price conversion between Flourish units and Apex product units.

::

    Flourish package           Apex batch
    qty in ea|g|mg|kg|oz|lb ── to_apex_quantity ──►  quantity in the product's
                                  (rounds DOWN)        base unit: Unit, Gram, Pound,
                                                       Ounce, Kilogram, Milligram
    Flourish order line        Apex order line
    order_qty (4 dp)  ◄────── to_flourish_quantity ──  inventory_quantity
    unit_price        ◄──── to_flourish_unit_price ──  order price per base unit

Every unit is either a count (``ea``, ``Unit``) or a mass, measured here in grams.
The pound is the tenant's ``grams_per_pound`` factor (Apex has a company setting
"Grams to Pound Conversion" that it must match) and the ounce is a sixteenth of
that pound. Everything is ``Decimal``; nothing passes through ``float``.

A count against a mass converts only through a known unit weight, say a 0.5 g
pre-roll. Without one, or for a unit this module does not know, the functions
raise ``UnitMismatch``.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import NamedTuple

from shared.errors import UnitMismatch

#: Flourish units of measure this integration converts (Flourish ``/v1/uoms``
#: also lists ``t``, lengths and volumes, which no Apex product unit matches).
FLOURISH_UOMS = ("ea", "g", "mg", "kg", "oz", "lb")

#: Apex unit measurement names this integration converts. ``Case`` exists only
#: on order lines, never as a product's base unit.
APEX_UNITS = ("Unit", "Gram", "Pound", "Ounce", "Kilogram", "Milligram")

#: Step of a quantity offered on Apex: whole units, else four decimal places.
UNIT_QUANTUM = Decimal(1)
WEIGHT_QUANTUM = Decimal("0.0001")

#: Flourish keeps quantities to four decimal places.
FLOURISH_QUANTUM = Decimal("0.0001")

#: NOTE: Flourish does not document the precision of ``unit_price``; four
#: decimal places keep a line total within a cent for lines up to 200 units.
PRICE_QUANTUM = Decimal("0.0001")

_FLOURISH_ALIASES = {uom: uom for uom in FLOURISH_UOMS} | {
    "each": "ea",
    "gram": "g",
    "grams": "g",
    "milligram": "mg",
    "kilogram": "kg",
    "ounce": "oz",
    "pound": "lb",
    "lbs": "lb",
}

_APEX_ALIASES = {name.lower(): name for name in APEX_UNITS} | {
    "ea": "Unit",
    "each": "Unit",
    "units": "Unit",
    "g": "Gram",
    "grams": "Gram",
    "lb": "Pound",
    "lbs": "Pound",
    "pounds": "Pound",
    "oz": "Ounce",
    "ounces": "Ounce",
    "kg": "Kilogram",
    "mg": "Milligram",
}

# Apex names mapped onto the Flourish symbols, so one table of masses serves both.
_APEX_TO_SYMBOL = {
    "Unit": "ea",
    "Gram": "g",
    "Pound": "lb",
    "Ounce": "oz",
    "Kilogram": "kg",
    "Milligram": "mg",
}


_INVENTORY_REMEDY = (
    "Set the item's unit weight in Flourish, or give the Apex product a unit of "
    "the same kind as the Flourish package."
)
_ORDER_REMEDY = (
    "Give the Apex product a unit of the same kind as the Flourish item; order "
    "lines are not converted through a unit weight."
)


class _Unit(NamedTuple):
    """A unit resolved to its kind: a count, or a mass of ``grams`` each."""

    label: str
    grams: Decimal | None


def normalise_flourish_uom(uom: str) -> str:
    """Return the Flourish symbol (``ea``, ``g``, ...) for ``uom`` or one of its names.

    Raises ``UnitMismatch`` for a unit this integration does not convert.
    """
    symbol = _FLOURISH_ALIASES.get(str(uom).strip().lower())
    if symbol is None:
        expected = ", ".join(FLOURISH_UOMS)
        raise UnitMismatch(f"Unknown Flourish unit {uom!r}: expected one of {expected}")
    return symbol


def normalise_apex_unit(unit: str) -> str:
    """Return the Apex unit name (``Unit``, ``Gram``, ...) for ``unit`` or an alias.

    Raises ``UnitMismatch`` for a unit this integration does not convert.
    """
    name = _APEX_ALIASES.get(str(unit).strip().lower())
    if name is None:
        raise UnitMismatch(
            f"Unknown Apex unit {unit!r}: expected one of {', '.join(APEX_UNITS)} "
            "(or ea, g, lb, oz, kg, mg)."
        )
    return name


def offer_quantum(apex_unit: str) -> Decimal:
    """Return the step an offered Apex quantity is rounded down to."""
    return UNIT_QUANTUM if normalise_apex_unit(apex_unit) == "Unit" else WEIGHT_QUANTUM


def to_apex_quantity(
    quantity: Decimal,
    flourish_uom: str,
    apex_unit: str,
    *,
    grams_per_pound: Decimal,
    unit_weight: Decimal | None = None,
    unit_weight_uom: str | None = None,
) -> Decimal:
    """Convert a Flourish package quantity into the Apex product's base unit.

    The result is rounded DOWN (toward minus infinity) to whole units for
    ``Unit`` and to four decimal places otherwise, so Apex never offers more
    than the package holds. A negative quantity stays negative; the caller
    decides what to offer for it. ``unit_weight`` with ``unit_weight_uom`` is
    the weight of one each and is needed only between a count and a mass.

    Raises ``UnitMismatch`` for an unknown unit, or a count against a mass
    without a usable unit weight.
    """
    source = _flourish_unit(flourish_uom, grams_per_pound)
    target = _apex_unit(apex_unit, grams_per_pound)
    weight = _unit_weight_grams(unit_weight, unit_weight_uom, grams_per_pound)

    # Every inexact step rounds toward minus infinity too, so no digit beyond
    # the 28th can lift the result over a rounding step.
    with localcontext(rounding=ROUND_FLOOR):
        source_size, target_size = _sizes(source, target, weight, _INVENTORY_REMEDY)
        converted = quantity * source_size / target_size
        return converted.quantize(offer_quantum(apex_unit))


def to_flourish_quantity(
    quantity: Decimal, apex_unit: str, flourish_uom: str, *, grams_per_pound: Decimal
) -> Decimal:
    """Convert an Apex order quantity (base unit) into the Flourish item's unit.

    The result keeps four decimal places, rounded half up. Raises
    ``UnitMismatch`` for an unknown unit or a count against a mass.
    """
    source = _apex_unit(apex_unit, grams_per_pound)
    target = _flourish_unit(flourish_uom, grams_per_pound)

    source_size, target_size = _sizes(source, target, None, _ORDER_REMEDY)
    converted = quantity * source_size / target_size

    return converted.quantize(FLOURISH_QUANTUM, rounding=ROUND_HALF_UP)


def to_flourish_unit_price(
    price: Decimal, apex_unit: str, flourish_uom: str, *, grams_per_pound: Decimal
) -> Decimal:
    """Convert a price per Apex base unit into a price per Flourish unit.

    A price per pound becomes a price per gram by dividing by the grams in a
    pound, the inverse of the quantity conversion, so quantity times price
    stays the same. Raises ``UnitMismatch`` like ``to_flourish_quantity``.
    """
    source = _apex_unit(apex_unit, grams_per_pound)
    target = _flourish_unit(flourish_uom, grams_per_pound)

    source_size, target_size = _sizes(source, target, None, _ORDER_REMEDY)
    converted = price * target_size / source_size

    return converted.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)


def _flourish_unit(uom: str, grams_per_pound: Decimal) -> _Unit:
    symbol = normalise_flourish_uom(uom)
    return _Unit(f"Flourish {symbol!r}", _grams_of(symbol, grams_per_pound))


def _apex_unit(unit: str, grams_per_pound: Decimal) -> _Unit:
    name = normalise_apex_unit(unit)
    return _Unit(f"Apex {name!r}", _grams_of(_APEX_TO_SYMBOL[name], grams_per_pound))


def _grams_of(symbol: str, grams_per_pound: Decimal) -> Decimal | None:
    """Return the grams in one ``symbol``, or None for a count."""
    if grams_per_pound <= 0:
        raise ValueError(f"grams_per_pound must be positive, got {grams_per_pound}")
    masses = {
        "g": Decimal(1),
        "mg": Decimal("0.001"),
        "kg": Decimal(1000),
        "lb": grams_per_pound,
        "oz": grams_per_pound / 16,
    }
    return masses.get(symbol)


def _unit_weight_grams(
    unit_weight: Decimal | None, unit_weight_uom: str | None, grams_per_pound: Decimal
) -> Decimal | None:
    """Return the grams in one each, or None when no usable weight was given."""
    if unit_weight is None or unit_weight <= 0 or not unit_weight_uom:
        return None

    grams = _flourish_unit(unit_weight_uom, grams_per_pound).grams
    if grams is None:
        raise UnitMismatch(
            f"Unit weight {unit_weight} {unit_weight_uom!r} is not a mass: set the "
            "item's weight unit in Flourish to g, mg, kg, oz or lb."
        )
    return unit_weight * grams


def _sizes(
    source: _Unit, target: _Unit, each_grams: Decimal | None, remedy: str
) -> tuple[Decimal, Decimal]:
    """Return the sizes of one ``source`` and one ``target`` unit in a common measure.

    Callers multiply before they divide, so an exact result stays exact.
    """
    if source.grams is None and target.grams is None:
        return Decimal(1), Decimal(1)

    if (source.grams is None or target.grams is None) and each_grams is None:
        raise UnitMismatch(
            f"Cannot convert {source.label} to {target.label}: one is a count and "
            f"the other a mass. {remedy}"
        )

    source_grams = source.grams if source.grams is not None else each_grams
    target_grams = target.grams if target.grams is not None else each_grams
    assert source_grams is not None and target_grams is not None
    return source_grams, target_grams
