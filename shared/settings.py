"""Settings every process reads from the environment (prefix ``GM_``).

The defaults fit a development machine: PostgreSQL with trust auth and RabbitMQ guest/guest on
loopback. Outside development the settings refuse the defaults that would be unsafe there.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GM_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # One database per service on one server; a service may be pointed elsewhere by its own URL.
    postgres_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432"
    database_prefix: str = "gm"
    auth_database_url: str | None = None
    sessions_database_url: str | None = None
    sandbox_database_url: str | None = None
    db_pool_size: int = 5
    db_max_overflow: int = 5

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Every exchange and queue name starts with this, so test runs never share a queue.
    broker_namespace: str = "gm"
    publish_timeout: float = 10.0
    prefetch: int = 8

    bind_host: str = "127.0.0.1"
    # A worker or relay serves /health and /ready here; 0 turns that off.
    health_port: int = 0
    auth_port: int = 8001
    sessions_port: int = 8002
    sandbox_port: int = 8003
    gateway_port: int = 8000
    auth_url: str = "http://127.0.0.1:8001"

    # Tokens: auth signs with a private key kept here (generated on first start, never in git).
    key_dir: Path = PROJECT_ROOT / "var" / "keys"
    token_issuer: str = "guest-migration-auth"
    token_audience: str = "guest-migration"
    access_token_minutes: int = 60
    guest_token_days: int = 30
    token_leeway_seconds: int = 10

    # auth's sweeper: how often it removes guests nobody claimed, and how long after a guest's
    # expiry it waits first (a guest token lives as long as its guest, so none still works).
    guest_sweep_seconds: float = Field(3600.0, gt=0)
    guest_grace_hours: float = Field(24.0, ge=0)

    sandbox_root: Path = PROJECT_ROOT / "var" / "sandbox"
    upload_max_bytes: int = 50 * 1024 * 1024
    json_max_bytes: int = 64 * 1024

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> "Settings":
        if self.environment == "production" and "guest:guest@" in self.amqp_url:
            raise ValueError("GM_AMQP_URL uses the guest account; set real credentials")
        return self

    def database_url(self, service: str) -> str:
        own = getattr(self, f"{service}_database_url")
        if own:
            return own
        return f"{self.postgres_url}/{self.database_name(service)}"

    def database_name(self, service: str) -> str:
        return f"{self.database_prefix}_{service}"


def load() -> Settings:
    return Settings()
