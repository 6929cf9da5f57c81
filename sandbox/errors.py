"""Exceptions that routes raise to return an API's own error body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error response: HTTP status, JSON body and extra headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, body.get("message") or body.get("error"))
        self.status = status
        self.body = body
        self.headers = headers or {}


class HtmlPageRequired(Exception):
    """Raised when an Apex request lacks ``Accept: application/json``."""


def apex_error(status: int, message: str) -> ApiError:
    return ApiError(status, {"message": message})


def apex_validation(errors: dict[str, list[str]]) -> ApiError:
    """Build Laravel's 422 body: the first message plus every field's messages."""
    first = next(iter(errors.values()))[0]
    others = sum(len(messages) for messages in errors.values()) - 1
    message = first if others == 0 else f"{first} (and {others} more errors)"
    return ApiError(422, {"message": message, "errors": errors})


def apex_required(field: str) -> ApiError:
    label = field.replace("_", " ")
    return apex_validation({field: [f"The {label} field is required."]})


def flourish_error(status: int, message: str) -> ApiError:
    return ApiError(status, {"message": message, "status": status})
