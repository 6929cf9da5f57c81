"""Logging setup: one line format with ids, and credential masking.

``RedactingFilter`` masks credentials in every record a handler emits: the
rendered message, its arguments and any formatted traceback. It masks two
kinds of secret:

* patterns that look like credentials wherever they appear (``Bearer``
  tokens, ``x-api-key`` values, Fernet tokens, ``token=``/``key=``/
  ``password=`` pairs, long random strings after a key-like word);
* exact values registered with ``register_secret`` when a credential is
  decrypted or typed in, so a token that matches no pattern is masked too.

``redact`` applies the same masking to any text, for dead letters and
exception excerpts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO
from urllib.parse import quote

MASK = "***"

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(ids)s%(message)s"

#: Registered secrets shorter than this are ignored: masking every "abc" in a
#: log would hide more than it protects, and real keys are far longer.
MIN_REGISTERED_SECRET_LENGTH = 8

#: Libraries that log full request URLs (with query strings) at INFO.
_QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")

_TOKEN_CHARS = r"[A-Za-z0-9._~+/=|\-]"
_KEY_WORDS = r"token|key|password|passwd|pwd|secret|credential|authorization"


def _mask_basic_credentials(match: re.Match[str]) -> str:
    # "Basic" is also an English word: mask only what decodes to "user:password".
    try:
        decoded = base64.b64decode(match.group(2), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return match.group(0)
    return match.group(1) + MASK if ":" in decoded else match.group(0)


_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Apex tokens may contain "|" (Laravel Sanctum style "id|secret").
    (re.compile(rf"\b(Bearer\s+){_TOKEN_CHARS}{{6,}}"), rf"\1{MASK}"),
    # HTTP schemes are case-insensitive, but "bearer" is also an English word,
    # so other spellings need a token of random-looking length.
    (re.compile(rf"\b(bearer\s+){_TOKEN_CHARS}{{20,}}", re.I), rf"\1{MASK}"),
    (re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})"), _mask_basic_credentials),
    # Fernet tokens always start with version byte 0x80, "gAAAAA" in base64.
    (re.compile(r"gAAAAA[A-Za-z0-9_\-]{20,}={0,2}"), MASK),
    # Header or field named like an API key: "x-api-key: abc", "apikey=abc".
    (
        re.compile(
            r"""\b(x-api-key|api-key|apikey)(["']?\s*[:=]\s*["']?)[^\s"',}&]+""", re.I
        ),
        rf"\1\2{MASK}",
    ),
    # Quoted pairs as in JSON or a dict repr: "api_key": "abc".
    (
        re.compile(
            rf"""(["'][\w\-]*(?:{_KEY_WORDS})[\w\-]*["']\s*:\s*["'])[^"']+""", re.I
        ),
        rf"\1{MASK}",
    ),
    # Assignments as in a query string or a log line: token=abc, password=abc.
    (
        re.compile(rf"\b([\w\-]*(?:{_KEY_WORDS})[\w\-]*=)[^\s&,;'\"]+", re.I),
        rf"\1{MASK}",
    ),
    # A long random string right after a key-like word: "key: 3f9a...".
    (
        re.compile(rf"\b((?:{_KEY_WORDS})s?\b[\s:\"']+){_TOKEN_CHARS}{{24,}}", re.I),
        rf"\1{MASK}",
    ),
)

_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None
_registered_lock = threading.Lock()

_log_ids: ContextVar[Mapping[str, object] | None] = ContextVar(
    "apexsync_log_ids", default=None
)


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in later log lines and ``redact`` output.

    Call it whenever a credential is decrypted or read from an operator, so a
    secret that looks like nothing in particular is masked as well. The
    URL-encoded form is registered too. Values shorter than
    ``MIN_REGISTERED_SECRET_LENGTH`` characters are ignored.
    """
    if not value or len(value) < MIN_REGISTERED_SECRET_LENGTH:
        return

    global _registered_pattern
    with _registered_lock:
        _registered.update({value, quote(value, safe="")})
        ordered = sorted(_registered, key=len, reverse=True)
        _registered_pattern = re.compile("|".join(re.escape(item) for item in ordered))


def forget_registered_secrets() -> None:
    """Drop every registered secret (tests use this to start clean)."""
    global _registered_pattern
    with _registered_lock:
        _registered.clear()
        _registered_pattern = None


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential-like values masked."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)

    for credential, replacement in _PATTERNS:
        text = credential.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Mask credentials in a record's message, arguments and traceback.

    The message is rendered with its arguments first, so a secret passed as a
    lazy ``%s`` argument is masked as well. The record then carries the masked
    text and no arguments. Attach it to a handler, because a handler's filters
    see the records of every logger that propagates to it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_render_message(record))
        record.args = None

        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _render_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        # Arguments that do not fit the format string: keep both, masked.
        return f"{record.msg} {record.args!r}"


class ContextFilter(logging.Filter):
    """Add the ids bound with ``bind_log_ids`` to each record as ``ids``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _log_ids.get() or {}
        record.ids = "".join(f"{name}={value} " for name, value in ids.items())
        return True


@contextmanager
def bind_log_ids(**ids: object) -> Iterator[None]:
    """Prefix every log line written inside the block with ``name=value`` ids.

    Blocks nest; inner ids are added to the outer ones. Pass ids only
    (tenant, facility, run, task), never a credential.
    """
    token = _log_ids.set({**(_log_ids.get() or {}), **ids})
    try:
        yield
    finally:
        _log_ids.reset(token)


def configure_logging(
    level: str | int = "INFO", *, stream: TextIO | None = None
) -> None:
    """Send every log record to ``stream`` (default stderr) in one format.

    Installs one handler on the root logger with ``RedactingFilter`` and
    ``ContextFilter``, replacing a handler installed by an earlier call, and
    keeps HTTP libraries at WARNING because they log full URLs at INFO.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_apexsync", False):
            root.removeHandler(handler)

    handler = logging.StreamHandler(stream or sys.stderr)
    handler._apexsync = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(_level_number(level))

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level

    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        raise ValueError(
            f"Unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL."
        )
    return number
