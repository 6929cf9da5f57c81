"""Tests of shared.units: conversion tables, errors and rounding properties."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import UnitMismatch
from shared.units import (
    normalise_apex_unit,
    normalise_flourish_uom,
    to_apex_quantity,
    to_flourish_quantity,
    to_flourish_unit_price,
)

D = Decimal
POUND = D("453.59237")

APEX_CASES = [
    # (flourish qty, uom, apex unit, grams per pound, unit weight, its uom, expected)
    pytest.param(
        D("12.34567"),
        "g",
        "Gram",
        POUND,
        None,
        None,
        D("12.3456"),
        id="g-to-gram-rounds-down",
    ),
    pytest.param(
        D("448"), "g", "Pound", POUND, None, None, D("0.9876"), id="g-to-pound"
    ),
    pytest.param(
        D("448"),
        "g",
        "Pound",
        D("454"),
        None,
        None,
        D("0.9867"),
        id="g-to-pound-tenant-factor",
    ),
    pytest.param(
        D("2.5"), "lb", "Pound", POUND, None, None, D("2.5000"), id="lb-to-pound"
    ),
    pytest.param(
        D("1"), "lb", "Gram", POUND, None, None, D("453.5923"), id="lb-to-gram"
    ),
    pytest.param(
        D("1"), "oz", "Gram", POUND, None, None, D("28.3495"), id="oz-to-gram"
    ),
    pytest.param(
        D("16"), "oz", "Pound", POUND, None, None, D("1.0000"), id="oz-to-pound"
    ),
    pytest.param(
        D("1"), "kg", "Pound", POUND, None, None, D("2.2046"), id="kg-to-pound"
    ),
    pytest.param(
        D("1500"), "mg", "Gram", POUND, None, None, D("1.5000"), id="mg-to-gram"
    ),
    pytest.param(
        D("2"), "g", "Milligram", POUND, None, None, D("2000.0000"), id="g-to-milligram"
    ),
    pytest.param(
        D("500"), "g", "Kilogram", POUND, None, None, D("0.5000"), id="g-to-kilogram"
    ),
    pytest.param(
        D("1"), "lb", "Ounce", POUND, None, None, D("16.0000"), id="lb-to-ounce"
    ),
    pytest.param(D("10"), "ea", "Unit", POUND, None, None, D("10"), id="each-to-unit"),
    pytest.param(
        D("10.5"), "ea", "Unit", POUND, None, None, D("10"), id="each-to-unit-whole"
    ),
    pytest.param(
        D("448"), "G", "lb", POUND, None, None, D("0.9876"), id="aliases-and-case"
    ),
    pytest.param(D("3"), "each", "ea", POUND, None, None, D("3"), id="each-aliases"),
    pytest.param(
        D("10"),
        "ea",
        "Gram",
        POUND,
        D("0.5"),
        "g",
        D("5.0000"),
        id="each-to-gram-by-weight",
    ),
    pytest.param(
        D("1"),
        "ea",
        "Pound",
        POUND,
        D("14"),
        "lb",
        D("14.0000"),
        id="each-to-pound-by-weight",
    ),
    pytest.param(
        D("10.7"),
        "g",
        "Unit",
        POUND,
        D("3.5"),
        "g",
        D("3"),
        id="grams-to-units-by-weight",
    ),
    pytest.param(
        D("-1.23456"),
        "g",
        "Gram",
        POUND,
        None,
        None,
        D("-1.2346"),
        id="negative-floors",
    ),
]


@pytest.mark.parametrize(
    ("quantity", "uom", "unit", "factor", "weight", "weight_uom", "expected"),
    APEX_CASES,
)
def test_to_apex_quantity_table(
    quantity: Decimal,
    uom: str,
    unit: str,
    factor: Decimal,
    weight: Decimal | None,
    weight_uom: str | None,
    expected: Decimal,
) -> None:
    result = to_apex_quantity(
        quantity,
        uom,
        unit,
        grams_per_pound=factor,
        unit_weight=weight,
        unit_weight_uom=weight_uom,
    )

    assert result == expected
    assert result.as_tuple().exponent == expected.as_tuple().exponent


FLOURISH_CASES = [
    pytest.param(D("2"), "Pound", "g", POUND, D("907.1847"), id="pound-to-g"),
    pytest.param(D("2"), "Pound", "lb", POUND, D("2.0000"), id="pound-to-lb"),
    pytest.param(
        D("1"), "Pound", "g", D("454"), D("454.0000"), id="pound-to-g-tenant-factor"
    ),
    pytest.param(D("3.5"), "Gram", "g", POUND, D("3.5000"), id="gram-to-g"),
    pytest.param(D("1"), "Ounce", "g", POUND, D("28.3495"), id="ounce-to-g"),
    pytest.param(D("3"), "Unit", "ea", POUND, D("3.0000"), id="unit-to-each"),
    pytest.param(D("1.00005"), "Gram", "g", POUND, D("1.0001"), id="half-up-at-4dp"),
    pytest.param(D("1"), "kg", "g", POUND, D("1000.0000"), id="apex-alias"),
]


@pytest.mark.parametrize(
    ("quantity", "unit", "uom", "factor", "expected"), FLOURISH_CASES
)
def test_to_flourish_quantity_table(
    quantity: Decimal, unit: str, uom: str, factor: Decimal, expected: Decimal
) -> None:
    result = to_flourish_quantity(quantity, unit, uom, grams_per_pound=factor)

    assert result == expected
    assert result.as_tuple().exponent == -4


PRICE_CASES = [
    pytest.param(
        D("1800"), "Pound", "g", POUND, D("3.9683"), id="per-pound-to-per-gram"
    ),
    pytest.param(
        D("5"), "Gram", "lb", POUND, D("2267.9619"), id="per-gram-to-per-pound"
    ),
    pytest.param(D("10"), "Unit", "ea", POUND, D("10.0000"), id="per-unit-to-per-each"),
    pytest.param(D("1800"), "Pound", "lb", POUND, D("1800.0000"), id="same-unit"),
]


@pytest.mark.parametrize(("price", "unit", "uom", "factor", "expected"), PRICE_CASES)
def test_to_flourish_unit_price_table(
    price: Decimal, unit: str, uom: str, factor: Decimal, expected: Decimal
) -> None:
    assert to_flourish_unit_price(price, unit, uom, grams_per_pound=factor) == expected


MISMATCH_CASES = [
    pytest.param(
        lambda: to_apex_quantity(D(1), "ea", "Gram", grams_per_pound=POUND),
        ("'ea'", "'Gram'", "unit weight"),
        id="each-to-gram-without-weight",
    ),
    pytest.param(
        lambda: to_apex_quantity(D(1), "g", "Unit", grams_per_pound=POUND),
        ("'g'", "'Unit'", "unit weight"),
        id="gram-to-unit-without-weight",
    ),
    pytest.param(
        lambda: to_apex_quantity(D(1), "t", "Gram", grams_per_pound=POUND),
        ("'t'", "ea, g"),
        id="unknown-flourish-uom",
    ),
    pytest.param(
        lambda: to_apex_quantity(D(1), "g", "Case", grams_per_pound=POUND),
        ("'Case'", "Unit, Gram"),
        id="unknown-apex-unit",
    ),
    pytest.param(
        lambda: to_apex_quantity(
            D(1),
            "ea",
            "Gram",
            grams_per_pound=POUND,
            unit_weight=D(1),
            unit_weight_uom="ea",
        ),
        ("'ea'", "not a mass"),
        id="unit-weight-not-a-mass",
    ),
    pytest.param(
        lambda: to_flourish_quantity(D(1), "Unit", "g", grams_per_pound=POUND),
        ("'Unit'", "'g'", "same kind"),
        id="order-unit-to-grams",
    ),
    pytest.param(
        lambda: to_flourish_unit_price(D(1), "Pound", "ea", grams_per_pound=POUND),
        ("'Pound'", "'ea'"),
        id="price-pound-to-each",
    ),
]


@pytest.mark.parametrize(("call", "fragments"), MISMATCH_CASES)
def test_unit_mismatch_message_names_units(call, fragments: tuple[str, ...]) -> None:
    with pytest.raises(UnitMismatch) as caught:
        call()

    for fragment in fragments:
        assert fragment in str(caught.value)


def test_zero_unit_weight_counts_as_missing() -> None:
    with pytest.raises(UnitMismatch):
        to_apex_quantity(
            D(1),
            "ea",
            "Gram",
            grams_per_pound=POUND,
            unit_weight=D(0),
            unit_weight_uom="g",
        )


def test_non_positive_factor_rejected() -> None:
    with pytest.raises(ValueError, match="grams_per_pound"):
        to_apex_quantity(D(1), "g", "Pound", grams_per_pound=D(0))


def test_normalise_units_accepts_aliases() -> None:
    assert normalise_flourish_uom(" LB ") == "lb"
    assert normalise_flourish_uom("Gram") == "g"
    assert normalise_apex_unit("oz") == "Ounce"
    assert normalise_apex_unit("milligram") == "Milligram"


# Property tests. Exact checks run with 60 digits, beyond the module's 28.

MASS_UOMS = ["g", "mg", "kg", "oz", "lb"]
APEX_MASSES = ["Gram", "Milligram", "Kilogram", "Ounce", "Pound"]
GRAMS = {"g": D(1), "mg": D("0.001"), "kg": D(1000)}

quantities = st.decimals(min_value=0, max_value=10**6, places=4)
factors = st.decimals(min_value=440, max_value=460, places=6)


def _grams(symbol: str, factor: Decimal) -> Decimal:
    return {"lb": factor, "oz": factor / 16}.get(symbol) or GRAMS[symbol]


@given(quantities, st.sampled_from(MASS_UOMS), st.sampled_from(APEX_MASSES), factors)
def test_offered_mass_never_exceeds_available(
    available: Decimal, uom: str, unit: str, factor: Decimal
) -> None:
    offered = to_apex_quantity(available, uom, unit, grams_per_pound=factor)

    with localcontext(prec=60):
        symbol = normalise_flourish_uom(unit if unit != "Milligram" else "mg")
        offered_grams = offered * _grams(symbol, factor)
        available_grams = available * _grams(uom, factor)
        assert offered_grams <= available_grams
        assert offered >= 0
        assert (offered + D("0.0001")) * _grams(symbol, factor) > available_grams


@given(st.decimals(min_value=0, max_value=10**5, places=4))
def test_offered_units_never_exceed_available(available: Decimal) -> None:
    offered = to_apex_quantity(available, "ea", "Unit", grams_per_pound=POUND)

    assert offered <= available
    assert offered > available - 1


@given(
    st.integers(min_value=0, max_value=10**5),
    st.decimals(min_value=D("0.01"), max_value=1000, places=4),
    st.sampled_from(APEX_MASSES),
)
def test_offered_each_by_weight_within_stock(
    count: int, weight: Decimal, unit: str
) -> None:
    offered = to_apex_quantity(
        D(count),
        "ea",
        unit,
        grams_per_pound=POUND,
        unit_weight=weight,
        unit_weight_uom="g",
    )

    with localcontext(prec=60):
        symbol = normalise_flourish_uom(unit if unit != "Milligram" else "mg")
        assert offered * _grams(symbol, POUND) <= count * weight


@given(st.data(), st.decimals(min_value=0, max_value=10**6, places=4), factors)
def test_pound_order_fits_package_grams(
    data: st.DataObject, package_grams: Decimal, factor: Decimal
) -> None:
    offered = to_apex_quantity(package_grams, "g", "Pound", grams_per_pound=factor)
    steps = int(offered / D("0.0001"))
    ordered = data.draw(st.integers(min_value=0, max_value=steps)) * D("0.0001")

    grams = to_flourish_quantity(ordered, "Pound", "g", grams_per_pound=factor)

    assert grams <= package_grams
