"""JSON responses rendered straight with ``json.dumps``.

Routes return these instead of dicts, because FastAPI would otherwise walk
every value of a 500-row page through its encoder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import JSONResponse


def _fallback(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class SandboxJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        text = json.dumps(
            content, ensure_ascii=False, separators=(",", ":"), default=_fallback
        )
        return text.encode("utf-8")


def respond(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> SandboxJSONResponse:
    return SandboxJSONResponse(body, status_code=status, headers=headers)
