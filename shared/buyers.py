"""Matching Apex buyers to Flourish destinations by license number and address.

A buyer is linked automatically only when exactly one destination carries the
same license number and the same address once both are normalised. Anything
less certain goes to review with the candidates listed, so a person decides.
Links set by hand (``source="manual"``) are never changed by a later matching
run; that includes a manual unlink, stored as the state "unlinked".
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import UnlinkedBuyer
from shared.models import BuyerLink

logger = logging.getLogger(__name__)

LINKED = "linked"
REVIEW = "review"
UNMATCHED = "unmatched"
#: An operator removed the link by hand; matching leaves it alone.
UNLINKED = "unlinked"
BUYER_LINK_STATES = (LINKED, REVIEW, UNMATCHED, UNLINKED)

AUTO = "auto"
MANUAL = "manual"

_STREET_WORDS = {
    "STREET": "ST",
    "STR": "ST",
    "AVENUE": "AVE",
    "AV": "AVE",
    "ROAD": "RD",
    "BOULEVARD": "BLVD",
    "DRIVE": "DR",
    "LANE": "LN",
    "COURT": "CT",
    "PARKWAY": "PKWY",
    "PKY": "PKWY",
    "HIGHWAY": "HWY",
    "PLACE": "PL",
    "CIRCLE": "CIR",
    "TERRACE": "TER",
    "NORTH": "N",
    "SOUTH": "S",
    "EAST": "E",
    "WEST": "W",
    "NORTHEAST": "NE",
    "NORTHWEST": "NW",
    "SOUTHEAST": "SE",
    "SOUTHWEST": "SW",
}
_UNIT_MARKERS = {"#", "SUITE", "STE", "UNIT", "APT", "APARTMENT"}
UNIT_MARKER = "#"

_US_STATES = {
    "ALABAMA": "AL",
    "ALASKA": "AK",
    "ARIZONA": "AZ",
    "ARKANSAS": "AR",
    "CALIFORNIA": "CA",
    "COLORADO": "CO",
    "CONNECTICUT": "CT",
    "DELAWARE": "DE",
    "DISTRICT OF COLUMBIA": "DC",
    "FLORIDA": "FL",
    "GEORGIA": "GA",
    "HAWAII": "HI",
    "IDAHO": "ID",
    "ILLINOIS": "IL",
    "INDIANA": "IN",
    "IOWA": "IA",
    "KANSAS": "KS",
    "KENTUCKY": "KY",
    "LOUISIANA": "LA",
    "MAINE": "ME",
    "MARYLAND": "MD",
    "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI",
    "MINNESOTA": "MN",
    "MISSISSIPPI": "MS",
    "MISSOURI": "MO",
    "MONTANA": "MT",
    "NEBRASKA": "NE",
    "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH",
    "NEW JERSEY": "NJ",
    "NEW MEXICO": "NM",
    "NEW YORK": "NY",
    "NORTH CAROLINA": "NC",
    "NORTH DAKOTA": "ND",
    "OHIO": "OH",
    "OKLAHOMA": "OK",
    "OREGON": "OR",
    "PENNSYLVANIA": "PA",
    "RHODE ISLAND": "RI",
    "SOUTH CAROLINA": "SC",
    "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN",
    "TEXAS": "TX",
    "UTAH": "UT",
    "VERMONT": "VT",
    "VIRGINIA": "VA",
    "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV",
    "WISCONSIN": "WI",
    "WYOMING": "WY",
    "PUERTO RICO": "PR",
    "GUAM": "GU",
    "US VIRGIN ISLANDS": "VI",
    "VIRGIN ISLANDS": "VI",
    "AMERICAN SAMOA": "AS",
    "NORTHERN MARIANA ISLANDS": "MP",
}


# --- normalisation ------------------------------------------------------------


def normalize_license(value: str | None) -> str:
    """Return the license number in upper case with spaces and punctuation removed.

    "c11-0000123-LIC" and "C11 0000123 lic" both become "C110000123LIC".
    """
    if not value:
        return ""
    return re.sub(r"[^0-9A-Z]", "", value.upper())


def normalize_street(*lines: str | None) -> str:
    """Return the street lines as one upper-case string in one abbreviation style.

    Street suffixes and directions take their USPS abbreviation ("Avenue" →
    "AVE", "North" → "N") and every unit marker ("Suite", "Ste", "Unit",
    "Apt", "#") becomes "#".
    """
    text = " ".join(line for line in lines if line).upper()
    text = re.sub(r"[^0-9A-Z#]", " ", text).replace("#", " # ")

    tokens: list[str] = []
    for word in text.split():
        token = UNIT_MARKER if word in _UNIT_MARKERS else _STREET_WORDS.get(word, word)
        if token == UNIT_MARKER and tokens and tokens[-1] == UNIT_MARKER:
            continue
        tokens.append(token)
    return " ".join(tokens)


def normalize_city(value: str | None) -> str:
    if not value:
        return ""
    return " ".join(re.sub(r"[^0-9A-Z]", " ", value.upper()).split())


def normalize_state(value: str | None) -> str:
    """Return the two-letter code of a US state given by code or by name."""
    name = normalize_city(value)
    return _US_STATES.get(name, name)


def normalize_zip(value: str | None) -> str:
    """Return the first five digits of a ZIP or ZIP+4 code."""
    if not value:
        return ""
    return re.sub(r"\D", "", value)[:5]


@dataclass(frozen=True)
class NormalizedAddress:
    """An address reduced to the form in which two spellings compare equal."""

    street: str
    city: str
    state: str
    zip: str

    @classmethod
    def build(
        cls,
        line_one: str | None,
        line_two: str | None,
        city: str | None,
        state: str | None,
        zip_code: str | None,
    ) -> NormalizedAddress:
        return cls(
            street=normalize_street(line_one, line_two),
            city=normalize_city(city),
            state=normalize_state(state),
            zip=normalize_zip(zip_code),
        )

    def __str__(self) -> str:
        region = " ".join(part for part in (self.state, self.zip) if part)
        return ", ".join(part for part in (self.street, self.city, region) if part)

    def differences(self, other: NormalizedAddress) -> list[str]:
        """List the parts that differ, e.g. ``["zip 80202 vs 80203"]``.

        The street must be present on both sides. City, state and ZIP are
        compared only when both sides have them, because Apex buyers often
        leave parts of the address empty.
        """
        if not self.street or not other.street:
            return ["street missing"]

        differences = []
        for part in ("street", "city", "state", "zip"):
            mine, theirs = getattr(self, part), getattr(other, part)
            if mine and theirs and mine != theirs:
                differences.append(f"{part} {mine!r} vs {theirs!r}")
        return differences


# --- reading the upstream records ---------------------------------------------


def _text(record: Any, *names: str) -> str | None:
    """Return the first non-empty attribute (or dict key) of ``names``."""
    for name in names:
        value = (
            record.get(name)
            if isinstance(record, dict)
            else getattr(record, name, None)
        )
        if value not in (None, ""):
            return str(value)
    return None


def _buyer_state(buyer: Any) -> str | None:
    # Apex returns the state as an object {id, text, value} with ``with_state``.
    state = (
        buyer.get("state") if isinstance(buyer, dict) else getattr(buyer, "state", None)
    )
    if state is None or isinstance(state, str):
        return state
    return _text(state, "value", "text")


def buyer_license(buyer: Any) -> str | None:
    return _text(buyer, "state_license")


def buyer_address(buyer: Any) -> NormalizedAddress:
    """Normalise the address of an Apex buyer (``line_one`` … ``zip``)."""
    return NormalizedAddress.build(
        _text(buyer, "line_one"),
        _text(buyer, "line_two"),
        _text(buyer, "city"),
        _buyer_state(buyer),
        _text(buyer, "zip"),
    )


def destination_address(destination: Any) -> NormalizedAddress:
    """Normalise the address of a Flourish destination (``address_line_1`` …)."""
    return NormalizedAddress.build(
        _text(destination, "address_line_1"),
        _text(destination, "address_line_2"),
        _text(destination, "city"),
        _text(destination, "state"),
        _text(destination, "zip_code"),
    )


# --- matching -----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A destination that shares the buyer's license number."""

    destination_id: str
    name: str
    license_number: str
    address: str
    #: Parts of the address that differ from the buyer's; empty when equal.
    differences: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "destination_id": self.destination_id,
            "name": self.name,
            "license_number": self.license_number,
            "address": self.address,
            "differences": list(self.differences),
        }


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching one buyer: "linked", "review" or "unmatched"."""

    state: str
    reason: str
    destination_id: str | None = None
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DestinationIndex:
    """Destinations grouped by normalised license number, built once per run."""

    by_license: dict[str, list[Any]]

    @classmethod
    def build(cls, destinations: Iterable[Any]) -> DestinationIndex:
        by_license: dict[str, list[Any]] = {}
        for destination in destinations:
            key = normalize_license(_text(destination, "license_number"))
            if key:
                by_license.setdefault(key, []).append(destination)
        return cls(by_license)


def match_buyer(
    buyer: Any, destinations: Sequence[Any] | DestinationIndex
) -> MatchResult:
    """Match one Apex buyer to the Flourish destinations.

    ``linked``: exactly one destination has the buyer's license number and the
    same normalised address. ``review``: the license matches but the address
    differs, or several destinations share the license; the candidates are
    listed. ``unmatched``: the buyer has no license or no destination has it.
    """
    index = (
        destinations
        if isinstance(destinations, DestinationIndex)
        else DestinationIndex.build(destinations)
    )
    license_number = normalize_license(buyer_license(buyer))
    if not license_number:
        return MatchResult(UNMATCHED, "The Apex buyer has no license number.")

    same_license = index.by_license.get(license_number, [])
    if not same_license:
        return MatchResult(
            UNMATCHED, f"No Flourish destination has license {buyer_license(buyer)}."
        )

    address = buyer_address(buyer)
    candidates = tuple(_candidate(destination, address) for destination in same_license)
    return _decide(license_number, candidates)


def _candidate(destination: Any, buyer_address: NormalizedAddress) -> Candidate:
    address = destination_address(destination)
    return Candidate(
        destination_id=_text(destination, "id") or "",
        name=_text(destination, "name") or "",
        license_number=_text(destination, "license_number") or "",
        address=str(address),
        differences=tuple(buyer_address.differences(address)),
    )


def _decide(license_number: str, candidates: tuple[Candidate, ...]) -> MatchResult:
    if len(candidates) > 1:
        return MatchResult(
            REVIEW,
            f"{len(candidates)} Flourish destinations share license "
            f"{license_number}; choose one with `apexsync buyers link`.",
            candidates=candidates,
        )

    only = candidates[0]
    if only.differences:
        return MatchResult(
            REVIEW,
            f"License {license_number} matches destination {only.destination_id} "
            f"but the address differs: {'; '.join(only.differences)}.",
            candidates=candidates,
        )
    return MatchResult(
        LINKED,
        "License number and address match.",
        destination_id=only.destination_id,
        candidates=candidates,
    )


# --- storing links ------------------------------------------------------------


def apply_matches(
    session: Session,
    tenant_id: int,
    buyers: Iterable[Any],
    destinations: Sequence[Any] | DestinationIndex,
) -> Counter[str]:
    """Match each buyer and upsert its BuyerLink row; return counts per outcome.

    Automatic rows are refreshed with the new result. Manual rows keep their
    state and destination; only the buyer's name, license and address are
    refreshed. The count key "manual" counts the rows left alone.
    """
    index = (
        destinations
        if isinstance(destinations, DestinationIndex)
        else DestinationIndex.build(destinations)
    )
    links = _links_by_buyer(session, tenant_id)
    counts: Counter[str] = Counter()

    for buyer in buyers:
        buyer_id = int(_text(buyer, "id") or 0)
        link = links.get(buyer_id) or _new_link(session, tenant_id, buyer_id)
        links[buyer_id] = link
        _store_buyer_snapshot(link, buyer)
        if link.source == MANUAL:
            counts[MANUAL] += 1
            continue
        _store_result(link, match_buyer(buyer, index))
        counts[link.state] += 1

    session.flush()
    logger.info("tenant=%s buyers matched: %s", tenant_id, dict(counts))
    return counts


def _links_by_buyer(session: Session, tenant_id: int) -> dict[int, BuyerLink]:
    rows = session.scalars(select(BuyerLink).where(BuyerLink.tenant_id == tenant_id))
    return {row.apex_buyer_id: row for row in rows}


def _new_link(session: Session, tenant_id: int, apex_buyer_id: int) -> BuyerLink:
    link = BuyerLink(
        tenant_id=tenant_id,
        apex_buyer_id=apex_buyer_id,
        buyer_name=f"Apex buyer {apex_buyer_id}",
        source=AUTO,
        state=UNMATCHED,
        candidates=[],
    )
    session.add(link)
    return link


def _store_buyer_snapshot(link: BuyerLink, buyer: Any) -> None:
    link.buyer_name = (_text(buyer, "name") or link.buyer_name)[:255]
    link.license_number = buyer_license(buyer)
    link.address = str(buyer_address(buyer)) or None


def _store_result(link: BuyerLink, result: MatchResult) -> None:
    link.source = AUTO
    link.state = result.state
    link.reason = result.reason
    link.flourish_destination_id = result.destination_id
    link.candidates = [candidate.as_json() for candidate in result.candidates]


def find_link(session: Session, tenant_id: int, apex_buyer_id: int) -> BuyerLink | None:
    return session.scalars(
        select(BuyerLink)
        .where(BuyerLink.tenant_id == tenant_id)
        .where(BuyerLink.apex_buyer_id == apex_buyer_id)
    ).first()


def link_buyer(
    session: Session, tenant_id: int, apex_buyer_id: int, destination_id: str
) -> BuyerLink:
    """Link a buyer to a destination by hand; later matching runs keep this link."""
    link = find_link(session, tenant_id, apex_buyer_id) or _new_link(
        session, tenant_id, apex_buyer_id
    )
    link.source = MANUAL
    link.state = LINKED
    link.flourish_destination_id = destination_id
    link.reason = f"Linked by hand to destination {destination_id}."
    session.flush()

    logger.info(
        "tenant=%s buyer=%s linked by hand to destination=%s",
        tenant_id,
        apex_buyer_id,
        destination_id,
    )
    return link


def unlink_buyer(session: Session, tenant_id: int, apex_buyer_id: int) -> BuyerLink:
    """Remove a buyer's link by hand; later matching runs do not link it again.

    Orders of the buyer are then rejected as UnlinkedBuyer until someone
    links it with ``link_buyer`` or resets it with ``reset_buyer``.
    """
    link = find_link(session, tenant_id, apex_buyer_id) or _new_link(
        session, tenant_id, apex_buyer_id
    )
    link.source = MANUAL
    link.state = UNLINKED
    link.flourish_destination_id = None
    link.reason = "Unlinked by hand."
    session.flush()

    logger.info("tenant=%s buyer=%s unlinked by hand", tenant_id, apex_buyer_id)
    return link


def reset_buyer(
    session: Session, tenant_id: int, apex_buyer_id: int
) -> BuyerLink | None:
    """Hand a buyer back to automatic matching; the next run decides its link."""
    link = find_link(session, tenant_id, apex_buyer_id)
    if link is None:
        return None

    link.source = AUTO
    link.state = UNMATCHED
    link.flourish_destination_id = None
    link.reason = "Reset by hand; waiting for the next matching run."
    session.flush()
    return link


def linked_destination_id(session: Session, tenant_id: int, apex_buyer_id: int) -> str:
    """Return the destination id linked to an Apex buyer, or raise UnlinkedBuyer.

    The message gives the reason there is no link (no row yet, review, unmatched or
    unlinked by hand) and how to fix it.
    """
    link = find_link(session, tenant_id, apex_buyer_id)
    if link is not None and link.state == LINKED and link.flourish_destination_id:
        return link.flourish_destination_id

    raise UnlinkedBuyer(
        _unlinked_message(link, apex_buyer_id),
        tenant_id=tenant_id,
        apex_buyer_id=apex_buyer_id,
        buyer_state=link.state if link else None,
    )


def _unlinked_message(link: BuyerLink | None, apex_buyer_id: int) -> str:
    fix = f"Link it with `apexsync buyers link {apex_buyer_id} DESTINATION_ID`."
    if link is None:
        return (
            f"Apex buyer {apex_buyer_id} is not matched to a Flourish destination "
            f"yet. Run `apexsync buyers match`, or: {fix}"
        )

    reason = f" {link.reason}" if link.reason else ""
    return (
        f"Apex buyer {apex_buyer_id} ({link.buyer_name}) has no Flourish "
        f"destination (state {link.state}).{reason} {fix}"
    )
