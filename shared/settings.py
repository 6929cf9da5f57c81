"""The service's settings, read once from the environment (prefix ``APEXSYNC_``)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "demo", "test", "production"]

#: Exact international pound (NIST SP 811, appendix B.8), the default factor.
GRAMS_PER_POUND = Decimal("453.59237")


class Settings(BaseSettings):
    """Configuration of one deployment.

    Every field maps to ``APEXSYNC_<FIELD>``; for example ``APEXSYNC_REDIS_URL``.
    """

    model_config = SettingsConfigDict(
        env_prefix="APEXSYNC_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Environment = "development"
    #: SQLAlchemy URL; ``sqlite:///path`` for the embedded default.
    database_url: str = "sqlite:///.state/apexsync.db"
    #: Broker, result backend, locks and rate limits.
    redis_url: str = "redis://127.0.0.1:6379/0"
    apex_base_url: str = "https://app.apextrading.com/api"
    flourish_base_url: str = "https://app.flourishsoftware.com/external/api"
    #: Fernet keys, comma separated, newest first. The first one encrypts.
    secret_key: SecretStr | None = None
    #: Seconds before one upstream HTTP request times out.
    http_timeout: float = Field(default=30.0, gt=0)
    #: Apex allows 15 requests per second per token (Apex OpenAPI document).
    apex_requests_per_second: float = Field(default=15.0, gt=0)
    #: Flourish documents no limit, so this is a polite client-side ceiling.
    flourish_requests_per_second: float = Field(default=10.0, gt=0)
    #: Seconds a sync run or order push may stay queued or running before the
    #: reconciler enqueues it again.
    run_deadline_seconds: int = Field(default=1800, gt=0)
    #: Soft and hard time limits of every task, in seconds.
    task_soft_time_limit: int = Field(default=240, gt=0)
    task_time_limit: int = Field(default=300, gt=0)
    #: Attempts of a task before it goes to the dead letters.
    task_max_retries: int = Field(default=5, ge=0)
    #: Longest countdown a retry may wait, in seconds.
    max_retry_countdown: int = Field(default=600, gt=0)
    #: Deliveries of one message before it counts as killing its worker.
    max_deliveries: int = Field(default=3, gt=0)
    #: Seconds Redis waits before redelivering an unacknowledged message. It
    #: must exceed the longest task and the longest retry countdown, or a
    #: message still being worked on goes to a second worker. Default: twice
    #: the larger of the two.
    visibility_timeout: int | None = Field(default=None, gt=0)
    #: Seconds the facility cursor is moved back from a run's start, so rows
    #: updated while the run paged are read again next time.
    cursor_overlap_seconds: int = Field(default=300, ge=0)
    #: Seconds between beat's polls of Apex shipping orders, per tenant.
    order_poll_seconds: int = Field(default=300, gt=0)
    #: Folder of the embedded default's state (database, Valkey, logs).
    state_dir: Path = Path(".state")
    flower_user: str | None = None
    flower_password: SecretStr | None = None
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, value: str) -> str:
        # psycopg 3 is the installed driver; plain postgresql:// would pick psycopg2.
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @model_validator(mode="after")
    def _require_secret_key_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key is None:
            raise ValueError(
                "APEXSYNC_SECRET_KEY is missing. Production needs a Fernet key: "
                "create one with `apexsync secrets generate-key`."
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "APEXSYNC_TASK_SOFT_TIME_LIMIT must be below APEXSYNC_TASK_TIME_LIMIT."
            )
        longest = max(self.task_time_limit, self.max_retry_countdown)
        if self.visibility_timeout is not None and self.visibility_timeout <= longest:
            raise ValueError(
                f"APEXSYNC_VISIBILITY_TIMEOUT={self.visibility_timeout} must exceed "
                f"the task time limit and the longest retry countdown ({longest} s)."
            )
        return self

    @property
    def broker_visibility_timeout(self) -> int:
        """The visibility timeout in force, for the broker and result backend."""
        longest = max(self.task_time_limit, self.max_retry_countdown)
        return self.visibility_timeout or longest * 2


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first use."""
    return Settings()
