"""Timestamps and money in the formats each simulated API returns."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: Fixed origin of the seeded history, so the seed is the same on every run.
SEED_EPOCH = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def utcnow_seconds() -> datetime:
    """Return the current time cut to whole seconds, as Flourish stores it."""
    return utcnow().replace(microsecond=0)


def apex_time(moment: datetime) -> str:
    """Format a Laravel timestamp, e.g. ``2025-02-21T17:03:11.000000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def flourish_time(moment: datetime) -> str:
    """Format a Flourish timestamp, e.g. ``2021-11-15T15:18:46Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(moment: datetime | date) -> str:
    return moment.strftime("%Y-%m-%d")


def parse_time(text: str) -> datetime | None:
    """Parse an ISO 8601 date or timestamp. Naive values are taken as UTC.

    Returns None when the text is not a date, so callers can return their API's
    validation error.
    """
    cleaned = text.strip().replace(" ", "T")
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def is_date(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def seed_time(days: float) -> datetime:
    """Return the seeded moment ``days`` after the seed epoch."""
    return SEED_EPOCH + timedelta(days=days)


def to_decimal(value: object) -> Decimal | None:
    """Convert a JSON number or numeric string, or return None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def cents(dollars: Decimal) -> int:
    return int((dollars * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money(amount_cents: int) -> str:
    """Format cents as Apex's display string: dollars with two decimals."""
    return f"{Decimal(amount_cents) / 100:.2f}"
