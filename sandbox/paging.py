"""Paging of both APIs: Laravel page/per_page (Apex) and offset/limit (Flourish)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from sandbox.errors import apex_validation, flourish_error

APEX_DEFAULT_PER_PAGE = 15
APEX_MAX_PER_PAGE = 500
#: Flourish's documentation: "The maximum allowable limit is set to 50".
FLOURISH_MAX_LIMIT = 50
#: How many page numbers Laravel shows on each side of the current page.
LINK_WINDOW = 3


@dataclass
class ApexPage:
    rows: list[Any]
    links: dict[str, str | None]
    meta: dict[str, Any]


def _page_url(request: Request, name: str, value: int) -> str:
    items = [(k, v) for k, v in request.query_params.multi_items() if k != name]
    items.append((name, str(value)))
    return str(request.url.replace(query=urlencode(items)))


def _apex_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        label = name.replace("_", " ")
        raise apex_validation(
            {name: [f"The {label} field must be an integer."]}
        ) from None


def apex_paginate(
    request: Request, rows: list[Any], max_per_page: int = APEX_MAX_PER_PAGE
) -> ApexPage:
    """Slice ``rows`` to the requested page and build Laravel's links and meta."""
    per_page = _apex_int(request, "per_page", APEX_DEFAULT_PER_PAGE)
    if per_page < 1:
        raise apex_validation({"per_page": ["The per page field must be at least 1."]})
    if per_page > max_per_page:
        message = f"The per page field must not be greater than {max_per_page}."
        raise apex_validation({"per_page": [message]})
    # Laravel treats a page below 1 or a non-number as page 1.
    try:
        page = max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        page = 1

    total = len(rows)
    last_page = max(1, math.ceil(total / per_page))
    start = (page - 1) * per_page
    chunk = rows[start : start + per_page]
    return ApexPage(
        chunk,
        _apex_links(request, page, last_page),
        _apex_meta(request, page, last_page, per_page, total, start, len(chunk)),
    )


def _apex_links(request: Request, page: int, last_page: int) -> dict[str, str | None]:
    return {
        "first": _page_url(request, "page", 1),
        "last": _page_url(request, "page", last_page),
        "prev": _page_url(request, "page", page - 1) if page > 1 else None,
        "next": _page_url(request, "page", page + 1) if page < last_page else None,
    }


def _apex_meta(
    request: Request, page: int, last_page: int, per_page: int, total: int,
    start: int, count: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "current_page": page,
        "from": start + 1 if count else None,
        "last_page": last_page,
        "links": _meta_links(request, page, last_page),
        "path": str(request.url.replace(query="")).rstrip("?"),
        "per_page": per_page,
        "to": start + count if count else None,
        "total": total,
    }


def _meta_links(request: Request, page: int, last_page: int) -> list[dict[str, Any]]:
    """Build Laravel's ``meta.links``: previous, page numbers with gaps, next."""

    def link(number: int | None, label: str, active: bool = False) -> dict[str, Any]:
        url = _page_url(request, "page", number) if number else None
        return {"url": url, "label": label, "active": active}

    shown = {1, 2, last_page - 1, last_page}
    shown.update(range(page - LINK_WINDOW, page + LINK_WINDOW + 1))
    numbers = sorted(n for n in shown if 1 <= n <= last_page)

    links = [link(page - 1 if page > 1 else None, "&laquo; Previous")]
    previous = 0
    for number in numbers:
        if number > previous + 1:
            links.append(link(None, "..."))
        links.append(link(number, str(number), number == page))
        previous = number
    links.append(link(page + 1 if page < last_page else None, "Next &raquo;"))
    return links


def query_value(request: Request, name: str) -> str | None:
    """Return a query parameter, matching its name without regard to case."""
    for key, value in request.query_params.multi_items():
        if key.lower() == name:
            return value
    return None


def _flourish_int(request: Request, name: str, default: int) -> int:
    raw = query_value(request, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise flourish_error(400, f"{name} must be an integer, got {raw!r}.") from None


def flourish_window(request: Request) -> tuple[int, int]:
    """Return (offset, limit), or raise a 400 error for a limit above 50."""
    limit = _flourish_int(request, "limit", FLOURISH_MAX_LIMIT)
    offset = _flourish_int(request, "offset", 0)
    if limit > FLOURISH_MAX_LIMIT:
        message = f"The maximum allowable limit is set to {FLOURISH_MAX_LIMIT}."
        raise flourish_error(400, message)
    if limit < 1 or offset < 0:
        raise flourish_error(400, "limit must be at least 1 and offset at least 0.")
    return offset, limit


def flourish_list(
    request: Request, rows: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Slice ``rows`` by offset/limit and build Flourish's ``meta``."""
    offset, limit = flourish_window(request)
    chunk = rows[offset : offset + limit]
    has_next = offset + len(chunk) < len(rows)
    next_url = ""
    if has_next:
        items = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if k.lower() not in {"offset", "limit"}
        ]
        items += [("offset", str(offset + limit)), ("limit", str(limit))]
        next_url = str(request.url.replace(query=urlencode(items)))
    meta = {
        "total": len(rows),
        "offset": offset,
        "limit": limit,
        "count": len(chunk),
        "next": next_url,
    }
    return chunk, meta
