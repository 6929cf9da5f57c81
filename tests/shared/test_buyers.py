"""Buyer matching: normalisation, match outcomes and the stored links."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from shared.buyers import (
    LINKED,
    MANUAL,
    REVIEW,
    UNLINKED,
    UNMATCHED,
    NormalizedAddress,
    apply_matches,
    find_link,
    link_buyer,
    linked_destination_id,
    match_buyer,
    normalize_license,
    normalize_state,
    normalize_street,
    normalize_zip,
    reset_buyer,
    unlink_buyer,
)
from shared.errors import UnlinkedBuyer
from shared.models import Base, Tenant


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Tenant(id=1, name="Green Valley Farms", apex_token_encrypted="x"))
        session.add(Tenant(id=2, name="Coastal Cultivators", apex_token_encrypted="y"))
        session.commit()
        yield session


def buyer(**fields: Any) -> dict[str, Any]:
    base = {
        "id": 4411,
        "name": "Mile High Dispensary",
        "state_license": "402R-00123",
        "line_one": "123 North Main Street",
        "line_two": "Suite 200",
        "city": "Denver",
        "state": {"id": 6, "text": "Colorado", "value": "CO"},
        "zip": "80202-1234",
    }
    return base | fields


def destination(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "61bce55cf18c7800067000d4",
        "name": "Mile High Dispensary LLC",
        "license_number": "402r 00123",
        "address_line_1": "123 N. Main St.",
        "address_line_2": "#200",
        "city": "DENVER",
        "state": "CO",
        "zip_code": "80202",
    }
    return base | fields


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("402R-00123", "402R00123", id="dash"),
        pytest.param(" 402r 00123 ", "402R00123", id="spaces-and-case"),
        pytest.param("C11-0000123-LIC.", "C110000123LIC", id="punctuation"),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="none"),
    ],
)
def test_normalize_license_table(raw: str | None, expected: str) -> None:
    assert normalize_license(raw) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(("123 Main Street",), "123 MAIN ST", id="street-suffix"),
        pytest.param(("9 Ocean Avenue",), "9 OCEAN AVE", id="avenue"),
        pytest.param(("1 Old Mill Road",), "1 OLD MILL RD", id="road"),
        pytest.param(("5 Sunset Boulevard",), "5 SUNSET BLVD", id="boulevard"),
        pytest.param(("7 Lake Drive", "Unit 4"), "7 LAKE DR # 4", id="drive-unit"),
        pytest.param(("8 Elm Lane",), "8 ELM LN", id="lane"),
        pytest.param(("3 Oak Court",), "3 OAK CT", id="court"),
        pytest.param(("44 River Parkway",), "44 RIVER PKWY", id="parkway"),
        pytest.param(("101 Pacific Highway",), "101 PACIFIC HWY", id="highway"),
        pytest.param(("12 South West Street",), "12 S W ST", id="directions"),
        pytest.param(
            ("12 Northwest 5th Ave",), "12 NW 5TH AVE", id="compound-direction"
        ),
        pytest.param(("123 Main St", "Ste. 200"), "123 MAIN ST # 200", id="ste"),
        pytest.param(("123 Main St #200",), "123 MAIN ST # 200", id="hash-attached"),
        pytest.param(("123 Main St", "Apt 200"), "123 MAIN ST # 200", id="apt"),
        pytest.param(
            ("123 Main St", "Suite #200"), "123 MAIN ST # 200", id="suite-hash"
        ),
        pytest.param(("123 Main St.,",), "123 MAIN ST", id="trailing-punctuation"),
        pytest.param((None, None), "", id="empty"),
    ],
)
def test_normalize_street_table(lines: tuple[str | None, ...], expected: str) -> None:
    assert normalize_street(*lines) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("co", "CO", id="code-lower"),
        pytest.param("Colorado", "CO", id="name"),
        pytest.param("new  york", "NY", id="name-extra-space"),
        pytest.param("District of Columbia", "DC", id="district"),
        pytest.param(None, "", id="none"),
    ],
)
def test_normalize_state_table(raw: str | None, expected: str) -> None:
    assert normalize_state(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("80202", "80202", id="five"),
        pytest.param("80202-1234", "80202", id="zip-plus-four"),
        pytest.param("802021234", "80202", id="nine-digits"),
        pytest.param(" 80202 ", "80202", id="spaces"),
        pytest.param(None, "", id="none"),
    ],
)
def test_normalize_zip_table(raw: str | None, expected: str) -> None:
    assert normalize_zip(raw) == expected


def test_address_city_case_ignored() -> None:
    first = NormalizedAddress.build("1 Main St", None, "Denver", "CO", "80202")
    second = NormalizedAddress.build("1 Main Street", None, "DENVER", "Colorado", None)

    assert first.differences(second) == []


def test_address_differences_name_part() -> None:
    first = NormalizedAddress.build("1 Main St", None, "Denver", "CO", "80202")
    second = NormalizedAddress.build("1 Main St", None, "Denver", "CO", "80203")

    assert first.differences(second) == ["zip '80202' vs '80203'"]


@pytest.mark.parametrize(
    ("the_buyer", "destinations", "state", "destination_id"),
    [
        pytest.param(
            buyer(), [destination()], LINKED, destination()["id"], id="linked"
        ),
        pytest.param(
            buyer(state="Colorado"),
            [destination()],
            LINKED,
            destination()["id"],
            id="linked-state-as-name",
        ),
        pytest.param(
            buyer(),
            [destination(), destination(id="other", license_number="OTHER-1")],
            LINKED,
            destination()["id"],
            id="linked-among-others",
        ),
        pytest.param(
            buyer(line_one="125 North Main Street"),
            [destination()],
            REVIEW,
            None,
            id="review-street-differs",
        ),
        pytest.param(
            buyer(zip="80203"), [destination()], REVIEW, None, id="review-zip-differs"
        ),
        pytest.param(
            buyer(line_one=None, line_two=None),
            [destination()],
            REVIEW,
            None,
            id="review-buyer-without-address",
        ),
        pytest.param(
            buyer(),
            [destination(), destination(id="second")],
            REVIEW,
            None,
            id="review-two-destinations-one-license",
        ),
        pytest.param(
            buyer(state_license="999-XYZ"),
            [destination()],
            UNMATCHED,
            None,
            id="unmatched-license",
        ),
        pytest.param(
            buyer(state_license=None),
            [destination()],
            UNMATCHED,
            None,
            id="unmatched-no-license",
        ),
        pytest.param(buyer(), [], UNMATCHED, None, id="unmatched-no-destinations"),
    ],
)
def test_match_buyer_table(
    the_buyer: dict[str, Any],
    destinations: list[dict[str, Any]],
    state: str,
    destination_id: str | None,
) -> None:
    result = match_buyer(the_buyer, destinations)

    assert result.state == state
    assert result.destination_id == destination_id


def test_match_review_lists_candidates() -> None:
    result = match_buyer(buyer(), [destination(), destination(id="second")])

    assert [c.destination_id for c in result.candidates] == [
        destination()["id"],
        "second",
    ]
    assert "2 Flourish destinations share license 402R00123" in result.reason


def test_match_review_names_difference() -> None:
    result = match_buyer(buyer(zip="80203"), [destination()])

    assert result.candidates[0].differences == ("zip '80203' vs '80202'",)
    assert "zip '80203' vs '80202'" in result.reason


def test_match_accepts_attribute_objects() -> None:
    class Record:
        def __init__(self, **fields: Any) -> None:
            self.__dict__.update(fields)

    result = match_buyer(Record(**buyer()), [Record(**destination())])

    assert result.state == LINKED


def test_apply_matches_creates_links(session: Session) -> None:
    buyers = [buyer(), buyer(id=2, state_license="NONE-1")]

    counts = apply_matches(session, 1, buyers, [destination()])

    assert counts == {LINKED: 1, UNMATCHED: 1}
    assert find_link(session, 1, 4411).flourish_destination_id == destination()["id"]
    assert find_link(session, 1, 2).state == UNMATCHED


def test_apply_matches_stores_buyer_snapshot(session: Session) -> None:
    apply_matches(session, 1, [buyer()], [destination()])

    link = find_link(session, 1, 4411)
    assert link.buyer_name == "Mile High Dispensary"
    assert link.license_number == "402R-00123"
    assert link.address == "123 N MAIN ST # 200, DENVER, CO 80202"


def test_apply_matches_refreshes_automatic_links(session: Session) -> None:
    apply_matches(session, 1, [buyer()], [destination()])

    apply_matches(session, 1, [buyer(zip="99999")], [destination()])

    link = find_link(session, 1, 4411)
    assert link.state == REVIEW
    assert link.flourish_destination_id is None
    assert link.candidates[0]["destination_id"] == destination()["id"]


def test_manual_link_survives_matching(session: Session) -> None:
    link_buyer(session, 1, 4411, "hand-picked")

    counts = apply_matches(session, 1, [buyer()], [destination()])

    link = find_link(session, 1, 4411)
    assert counts == {MANUAL: 1}
    assert link.flourish_destination_id == "hand-picked"
    assert link.source == MANUAL
    assert link.state == LINKED


def test_manual_unlink_survives_matching(session: Session) -> None:
    apply_matches(session, 1, [buyer()], [destination()])
    unlink_buyer(session, 1, 4411)

    apply_matches(session, 1, [buyer()], [destination()])

    link = find_link(session, 1, 4411)
    assert link.state == UNLINKED
    assert link.flourish_destination_id is None


def test_reset_returns_link_to_matching(session: Session) -> None:
    unlink_buyer(session, 1, 4411)
    reset_buyer(session, 1, 4411)

    apply_matches(session, 1, [buyer()], [destination()])

    assert find_link(session, 1, 4411).state == LINKED


def test_links_are_scoped_by_tenant(session: Session) -> None:
    apply_matches(session, 1, [buyer()], [destination()])

    assert find_link(session, 2, 4411) is None
    with pytest.raises(UnlinkedBuyer):
        linked_destination_id(session, 2, 4411)


def test_linked_destination_id_returns_id(session: Session) -> None:
    apply_matches(session, 1, [buyer()], [destination()])

    assert linked_destination_id(session, 1, 4411) == destination()["id"]


def test_linked_destination_review_raises(session: Session) -> None:
    apply_matches(session, 1, [buyer(zip="99999")], [destination()])

    with pytest.raises(UnlinkedBuyer) as caught:
        linked_destination_id(session, 1, 4411)

    assert "state review" in str(caught.value)
    assert "apexsync buyers link 4411" in str(caught.value)
    assert caught.value.context["apex_buyer_id"] == 4411


def test_linked_destination_unknown_buyer_raises(session: Session) -> None:
    with pytest.raises(UnlinkedBuyer) as caught:
        linked_destination_id(session, 1, 777)

    assert "not matched to a Flourish destination yet" in str(caught.value)
