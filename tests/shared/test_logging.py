import io
import logging
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet

from shared.logging import (
    MASK,
    RedactingFilter,
    bind_log_ids,
    configure_logging,
    forget_registered_secrets,
    redact,
    register_secret,
)

logger = logging.getLogger("tests.redaction")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    forget_registered_secrets()
    yield
    forget_registered_secrets()


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture
def redacted_caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.handler.addFilter(RedactingFilter())
    caplog.set_level(logging.DEBUG, logger="tests.redaction")
    return caplog


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(
            "Authorization: Bearer 12|s3cr3tT0kenValue", "s3cr3tT0ken", id="bearer"
        ),
        pytest.param("x-api-key: fl-key-0042abcd", "fl-key-0042abcd", id="header"),
        pytest.param('{"x-api-key": "fl-key-0042abcd"}', "fl-key-0042abcd", id="json"),
        pytest.param("GET /v1/x?token=abc123&page=2", "abc123", id="query"),
        pytest.param("login password=hunter22 user=bob", "hunter22", id="password"),
        pytest.param("APEXSYNC_SECRET_KEY=Zm9vYmFy", "Zm9vYmFy", id="env-line"),
        pytest.param("{'apex_token': 'tok-value'}", "tok-value", id="dict-repr"),
        pytest.param(
            "api key 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            id="hex-after-key",
        ),
        pytest.param("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", id="basic"),
        pytest.param(
            "authorization: bearer 0123456789abcdefghijXYZ",
            "0123456789abcdefghijXYZ",
            id="lowercase-bearer",
        ),
    ],
)
def test_redact_masks_credential_patterns(text: str, secret: str) -> None:
    masked = redact(text)

    assert secret not in masked
    assert MASK in masked


def test_redact_masks_fernet_token() -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"apex-token").decode()

    masked = redact(f"stored value {token} failed")

    assert token not in masked
    assert masked == f"stored value {MASK} failed"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("tenant=3 facility=5 run=7 fetched=50", id="ids"),
        pytest.param("Flourish rejected the API key: check it", id="short-word"),
        pytest.param("Basic authentication is required", id="basic-word"),
        pytest.param("the bearer of this message", id="bearer-word"),
        pytest.param("GET /v1/packages?offset=50&limit=50", id="paging"),
    ],
)
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_register_secret_masks_exact_value() -> None:
    register_secret("plain-looking-secret")

    masked = redact("value plain-looking-secret seen twice: plain-looking-secret")

    assert "plain-looking-secret" not in masked
    assert masked.count(MASK) == 2


def test_register_secret_masks_url_encoded_form() -> None:
    register_secret("a b/c+d=secret")

    masked = redact("url ?q=a%20b%2Fc%2Bd%3Dsecret")

    assert "a%20b%2Fc%2Bd%3Dsecret" not in masked


def test_register_secret_ignores_short_values() -> None:
    register_secret("abc")

    assert redact("abc def") == "abc def"


def test_filter_masks_lazy_arguments(redacted_caplog: pytest.LogCaptureFixture) -> None:
    register_secret("opaque-credential-1")

    logger.warning("tenant=%s token %s rejected", 4, "opaque-credential-1")

    record = redacted_caplog.records[-1]
    assert "opaque-credential-1" not in record.getMessage()
    assert "tenant=4" in record.getMessage()
    assert "opaque-credential-1" not in redacted_caplog.text


def test_filter_masks_pattern_in_message(
    redacted_caplog: pytest.LogCaptureFixture,
) -> None:
    logger.info("sent headers %s", {"Authorization": "Bearer live-token-123456"})

    assert "live-token-123456" not in redacted_caplog.text
    assert MASK in redacted_caplog.text


def test_filter_masks_traceback_text(redacted_caplog: pytest.LogCaptureFixture) -> None:
    register_secret("secret-in-exception")

    try:
        raise RuntimeError("upstream echoed secret-in-exception")
    except RuntimeError:
        logger.exception("call failed")

    assert "secret-in-exception" not in redacted_caplog.text
    assert "RuntimeError" in redacted_caplog.text


def test_filter_survives_mismatched_arguments(
    redacted_caplog: pytest.LogCaptureFixture,
) -> None:
    logger.info("two slots %s %s", "password=hunter22")

    assert "hunter22" not in redacted_caplog.text


def test_configure_logging_formats_ids_and_masks() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    register_secret("configured-secret-9")

    with bind_log_ids(tenant=2, facility=8):
        logging.getLogger("tests.configured").info("using configured-secret-9")

    line = stream.getvalue()
    assert "tenant=2 facility=8 using" in line
    assert "configured-secret-9" not in line
    assert "INFO" in line


def test_configure_logging_replaces_own_handler() -> None:
    configure_logging("INFO", stream=io.StringIO())
    configure_logging("INFO", stream=io.StringIO())

    own = [h for h in logging.getLogger().handlers if getattr(h, "_apexsync", False)]
    assert len(own) == 1


def test_configure_logging_quiets_httpx() -> None:
    configure_logging("DEBUG", stream=io.StringIO())

    assert logging.getLogger("httpx").level == logging.WARNING


def test_configure_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="Unknown log level"):
        configure_logging("LOUD", stream=io.StringIO())


def test_bind_log_ids_nests_and_resets() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("tests.nested")

    with bind_log_ids(tenant=1), bind_log_ids(run=9):
        log.info("inner")
    log.info("outer")

    inner, outer = stream.getvalue().splitlines()
    assert "tenant=1 run=9 inner" in inner
    assert "tenant=" not in outer
