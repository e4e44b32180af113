"""One settings object for the whole engine, read from ``METERBOOK_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERBOOK_", env_file=".env", extra="ignore")

    # A relative SQLite path is taken from the project root, not the working directory.
    database_url: str = "sqlite:///data/meterbook.db"
    data_dir: Path = PROJECT_ROOT / "data"
    secret_key: SecretStr | None = None
    secret_key_file: Path = PROJECT_ROOT / "data" / "secret.key"
    base_url: str = "http://localhost:8501"
    port: int = 8501

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "meterbook@localhost"
    smtp_starttls: bool = True

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # a local wire-compatible server in tests
    # Billing is on only with a secret key; without one the workspace runs self-hosted, unlimited.
    stripe_price_pro: str | None = None  # the monthly base price of each paid plan
    stripe_price_business: str | None = None
    stripe_price_pro_usage: str | None = None  # metered prices on the AI-spend meter (first tier: what is included)
    stripe_price_business_usage: str | None = None
    stripe_meter_event_name: str = "meterbook_ai_spend"
    stripe_meter_id: str | None = None  # for the daily reconciliation against Stripe's meter summaries
    stripe_max_network_retries: int = 2
    billing_grace_days: int = 7  # a past-due workspace keeps its plan this long, then has Free limits
    billing_drain_seconds: float = 30.0  # how often `engine up` sends pending meter events

    # The sidecar's HTTP server (webhooks, Stripe, health); sidecar_url is how senders reach it when that
    # differs (behind a proxy, another host name) and is what the Workflows page prints in hook URLs.
    sidecar_host: str = "127.0.0.1"
    sidecar_port: int = 8765
    sidecar_url: str | None = None

    # The sidecar (python -m engine sidecar): workflow worker threads, and how long the scheduler
    # lease lasts without a renewal (renewed every third of it; a successor takes over after it).
    sidecar_workers: int = 2
    sidecar_lease_seconds: float = 30.0

    ollama_url: str = "http://127.0.0.1:11434"  # where a local Ollama is looked for (offered when it answers)

    session_days: int = 14
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    password_min_length: int = 10

    # The workflow python node runs only in bubblewrap's namespaces unless an admin knowingly allows
    # it without them (no network or file-system hiding then; see engine/workflows/python_sandbox.py).
    python_node_unisolated: bool = False

    # Which MCP stdio servers workspace admins may start on this host (engine/connectors/policy.py):
    # off, catalog (the catalog's commands, not those with host access) or any (custom commands too).
    # Unset: any while self-hosted (billing off), catalog once billing is on.
    mcp_stdio: Literal["off", "catalog", "any"] | None = None
    # Whether URLs a workspace types (the http node, remote MCP servers) may reach this host's own
    # networks (engine/outbound.py). Unset: allow while self-hosted, deny once billing is on.
    private_network: Literal["allow", "deny"] | None = None

    demo_seed: int = 20261122
    demo_rows: int | None = None  # ledger rows for the demo workspace; None: a small team's 90 days


@lru_cache
def get_settings() -> Settings:
    return Settings()
