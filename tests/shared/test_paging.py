"""Tests of shared.paging: paginators and the incremental cursor, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.paging import EPOCH, Cursor, OffsetPaginator, PagePaginator, has_next_page

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_offset_paginator_walks_full_pages() -> None:
    paginator = OffsetPaginator(limit=50)

    paginator.advance(50, "https://x/v1/packages?offset=50&limit=50")
    paginator.advance(50, "https://x/v1/packages?offset=100&limit=50")

    assert paginator.offset == 100
    assert not paginator.finished


def test_offset_paginator_stops_on_short_page() -> None:
    paginator = OffsetPaginator(limit=50, offset=100)

    paginator.advance(7, "https://x/next")

    assert paginator.finished
    assert paginator.offset == 107


def test_offset_paginator_stops_on_empty_next() -> None:
    paginator = OffsetPaginator(limit=2)

    paginator.advance(2, "")

    assert paginator.finished


def test_offset_paginator_without_meta_uses_count() -> None:
    paginator = OffsetPaginator(limit=2)

    paginator.advance(2, None)

    assert not paginator.finished


def test_offset_paginator_rejects_advance_after_end() -> None:
    paginator = OffsetPaginator(limit=50)
    paginator.advance(0, "")

    with pytest.raises(RuntimeError):
        paginator.advance(0, "")


def test_offset_paginator_rejects_zero_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        OffsetPaginator(limit=0)


def test_page_paginator_follows_last_page() -> None:
    paginator = PagePaginator(per_page=500)

    paginator.advance({"current_page": 1, "last_page": 3}, {"next": "?page=2"})
    assert paginator.page == 2
    assert not paginator.finished

    paginator.advance({"current_page": 2, "last_page": 3}, {"next": "?page=3"})
    paginator.advance({"current_page": 3, "last_page": 3}, {"next": None})

    assert paginator.finished
    assert paginator.page == 4


def test_page_paginator_plain_list_is_one_page() -> None:
    paginator = PagePaginator()

    paginator.advance(None, None)

    assert paginator.finished


def test_page_paginator_rejects_advance_after_end() -> None:
    paginator = PagePaginator()
    paginator.advance(None, None)

    with pytest.raises(RuntimeError):
        paginator.advance(None, None)


@pytest.mark.parametrize(
    ("meta", "links", "expected"),
    [
        pytest.param({"current_page": 1, "last_page": 2}, None, True, id="meta-more"),
        pytest.param({"current_page": 2, "last_page": 2}, None, False, id="meta-last"),
        pytest.param(None, {"next": "?page=2"}, True, id="links-only-next"),
        pytest.param(None, {"next": None}, False, id="links-null-next"),
        pytest.param(
            {"current_page": 1, "last_page": 5},
            {"next": None},
            False,
            id="null-next-wins",
        ),
        pytest.param(
            {"current_page": 5, "last_page": 5},
            {"next": "?page=6"},
            False,
            id="meta-wins",
        ),
        pytest.param({"total": 3}, None, False, id="meta-without-pages"),
        pytest.param(None, None, False, id="nothing"),
    ],
)
def test_has_next_page_table(meta, links, expected: bool) -> None:
    assert has_next_page(meta, links) is expected


def test_cursor_starts_at_epoch() -> None:
    assert Cursor().since == EPOCH


def test_cursor_moves_after_complete_run() -> None:
    cursor = Cursor(overlap=timedelta(minutes=5))

    moved = cursor.after_run(START, complete=True)

    assert moved.position == START - timedelta(minutes=5)
    assert moved.since == START - timedelta(minutes=5)
    assert cursor.position is None


def test_cursor_stays_after_failed_run() -> None:
    cursor = Cursor(position=START)

    assert cursor.after_run(START + timedelta(hours=4), complete=False) == cursor


def test_cursor_never_moves_backwards() -> None:
    cursor = Cursor(position=START, overlap=timedelta(minutes=5))

    stale = cursor.after_run(START + timedelta(minutes=1), complete=True)

    assert stale.position == START


def test_cursor_rejects_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Cursor().after_run(datetime(2025, 1, 1), complete=True)
