"""Paging and incremental-sync state, as small objects that need no HTTP.

::

    Flourish  offset/limit     OffsetPaginator(limit=50)
              offset 0 ──► 50 ──► 100 ─┤ finished when a page has fewer rows
                                         than the limit, or meta.next is ""
    Apex      page/per_page    PagePaginator(per_page=500)
              page 1 ──► 2 ──► 3 ─┤ finished when meta.current_page reaches
                                    meta.last_page, or links.next is null
    Both      Cursor           position ─► a run reads everything updated
                               since ``since`` ─► only a complete run moves
                               the position, to its start minus an overlap

The cursor never moves backwards and never moves after a failed run, so a
row updated while a run was paging is read again by the next run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

#: First ``updated_at_from`` of a facility that has never synced; Apex's own
#: advice is to seed the first call with a date before the company joined.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OffsetPaginator:
    """Offsets of an offset/limit list, such as Flourish's (limit at most 50)."""

    def __init__(self, limit: int, offset: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.offset = offset
        self.finished = False

    def advance(self, count: int, next_url: str | None = None) -> None:
        """Record a page of ``count`` rows and move to the next offset.

        ``next_url`` is the page's ``meta.next``: ``""`` marks the last page
        and None means the response had no meta, so only ``count`` decides.
        """
        if self.finished:
            raise RuntimeError("advance() called after the last page")

        self.offset += count
        self.finished = count < self.limit or next_url == ""


class PagePaginator:
    """Page numbers of a Laravel-style page/per_page list, such as Apex's."""

    def __init__(self, per_page: int = 500, page: int = 1) -> None:
        if per_page < 1 or page < 1:
            raise ValueError(f"page and per_page must be at least 1, got {page}")
        self.per_page = per_page
        self.page = page
        self.finished = False

    def advance(
        self, meta: Mapping[str, Any] | None, links: Mapping[str, Any] | None = None
    ) -> None:
        """Record the page just read from its ``meta`` and ``links`` objects.

        A response without ``meta`` and ``links`` is a plain list and has no
        next page.
        """
        if self.finished:
            raise RuntimeError("advance() called after the last page")

        self.finished = not has_next_page(meta, links)
        current = (meta or {}).get("current_page") or self.page
        self.page = int(current) + 1


def has_next_page(
    meta: Mapping[str, Any] | None, links: Mapping[str, Any] | None
) -> bool:
    """Tell from Apex's ``meta`` and ``links`` whether another page follows."""
    if links is not None and not links.get("next"):
        return False

    meta = meta or {}
    current, last = meta.get("current_page"), meta.get("last_page")
    if current is not None and last is not None:
        return int(current) < int(last)

    return links is not None


@dataclass(frozen=True)
class Cursor:
    """The incremental-sync watermark of one facility or tenant.

    ``position`` is the timestamp the next run reads from (None before the
    first complete run). ``overlap`` is subtracted from a run's start when the
    cursor moves, because rows can change while a run is paging.
    """

    position: datetime | None = None
    overlap: timedelta = timedelta(minutes=5)

    @property
    def since(self) -> datetime:
        """Timestamp to send as the "updated since" filter of the next run."""
        return self.position or EPOCH

    def after_run(self, started_at: datetime, *, complete: bool) -> Cursor:
        """Return the cursor after a run that started at ``started_at``.

        Only a complete run moves it, to ``started_at - overlap``, and never to
        an earlier position than the current one.
        """
        if started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware (UTC)")
        if not complete:
            return self

        moved = started_at - self.overlap
        if self.position is not None and moved <= self.position:
            return self
        return replace(self, position=moved)
