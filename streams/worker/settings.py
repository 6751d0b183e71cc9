"""Worker settings: every knob of the streaming side, read from ``ARTROUTE_*`` environment variables.

Precedence (highest first): explicit keyword arguments, environment variables, the endpoints file that
``python -m streams stack up`` writes (so local commands find the embedded stack), then the defaults below.
The README's settings table is generated from this class (``python -m streams settings``) and a test
checks that it stays in sync.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, JsonConfigSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from streams.contract.imaging import MAX_IMAGE_PIXELS

DEFAULT_STATE_DIR = Path(".artroute")


def endpoints_file() -> Path:
    """Where ``stack up`` writes its endpoints; ``ARTROUTE_STACK_FILE`` overrides."""
    return Path(os.environ.get("ARTROUTE_STACK_FILE", DEFAULT_STATE_DIR / "stack" / "endpoints.json"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARTROUTE_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------------------
    kafka_brokers: str = Field("127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*.")
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (from a Secret).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers (SSL/SASL_SSL).")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")
    kafka_enable_idempotence: bool = Field(
        False, description="Idempotent producer. Off by default: the embedded tansu broker rejects it; "
                           "turn on for Apache Kafka.")
    kafka_session_timeout_s: float = Field(
        6.0, description="Consumer-group session timeout. tansu delays a first join by half of it.")
    consumer_group: str = Field("artroute-router", description="Consumer group (the faust app id).")
    intake_topic: str = Field("artroute.intake", description="Topic the store's bucket events arrive on.")
    decisions_topic: str = Field("artroute.decisions", description="Routing decisions, keyed by object key.")
    review_topic: str = Field("artroute.review", description="Decisions that need a curator's review.")
    deadletter_topic: str = Field("artroute.deadletter", description="Events that could not be decided.")
    topic_partitions: int = Field(4, ge=1, description="Partitions for topics the app creates; bounds "
                                                        "how many workers share the intake.")
    kafka_max_message_bytes: int = Field(
        1_000_000, ge=64 * 1024, description="Largest record the producer sends (the broker's message.max.bytes; "
                                             "Apache Kafka's default is 1048588).")
    deadletter_max_bytes: int = Field(
        256 * 1024, ge=8 * 1024, description="A dead letter is cut to fit this (the original is then referenced "
                                             "by topic/partition/offset, size, sha256 and its first KiB).")

    # --- S3 store ------------------------------------------------------------------------------------
    s3_endpoint: str = Field("127.0.0.1:9000", description="S3 endpoint host:port (MinIO, AWS, SeaweedFS).")
    s3_access_key: str = Field("artroute", description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr("artroute-secret"), description="S3 secret key.")
    s3_secure: bool = Field(False, description="Use HTTPS for S3.")
    s3_region: str | None = Field(None, description="S3 region, if the store needs one.")
    s3_cafile: Path | None = Field(None, description="CA bundle to verify a store behind a private CA (HTTPS).")
    bucket: str = Field("artworks", description="Default bucket for uploads, replay and the demo.")
    s3_retry_max_s: float = Field(30.0, gt=0, description="Max backoff between fetch retries while the store "
                                                          "is unreachable or throttling.")

    # --- Triton --------------------------------------------------------------------------------------
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    model_name: str = Field("artroute", description="Model to ask Triton for.")
    model_version: str = Field("", description="Model version; empty means the newest ready version.")
    triton_timeout_s: float = Field(30.0, description="Per-request Triton timeout.")
    triton_retry_max_s: float = Field(60.0, description="Max backoff between retries while Triton is down.")

    # --- Pipeline ------------------------------------------------------------------------------------
    max_batch: int = Field(16, ge=1, description="Images per Triton request (stream.take max).")
    batch_window_s: float = Field(0.05, gt=0, description="How long to wait to fill a batch.")
    agent_concurrency: int = Field(2, ge=1, description="Batches in flight per worker: one is fetched and decoded "
                                                         "while another is on Triton.")
    fetch_concurrency: int = Field(16, ge=1, description="Concurrent object downloads per worker.")
    decode_threads: int = Field(2, ge=1, description="Threads decoding images (TurboJPEG and Pillow release the GIL while decoding).")
    max_object_bytes: int = Field(50 * 2**20, ge=1, description="Objects larger than this are dead-lettered.")
    fetch_memory_bytes: int = Field(128 * 2**20, ge=2**20, description="Bytes of fetched objects held at once, "
                                                                       "waiting to be decoded.")
    decode_memory_bytes: int = Field(512 * 2**20, ge=16 * 2**20, description="Memory concurrent decodes may hold "
                                     "at once; an image needing more than all of it is dead-lettered (bomb).")
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1, description="Decompression-bomb guard (pixels).")
    routing: Literal["model", "global"] = Field(
        "model", description="model: each version's fitted routing rule (docs/trust.md), the global thresholds "
                             "for versions exported without one; global: the global thresholds for every version "
                             "(an override without guarantee; unfamiliar photos still go to review).")
    review_min_confidence: float = Field(0.75, ge=0, le=1, description="Global threshold: below this calibrated "
                                                                         "top-1 score: review.")
    review_min_margin: float = Field(0.15, ge=0, le=1, description="Global threshold: below this top-1 minus "
                                                                     "top-2: review.")
    drift_window: int = Field(500, ge=1, description="Decisions in the sliding window of the drift gauges "
                                                     "(artroute_auto_routed_share, artroute_unfamiliar_share).")
    metrics_port: int = Field(0, ge=0, description="Port of GET /metrics, /healthz and /livez; 0 disables them.")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics/health endpoint binds (0.0.0.0 in "
                                                       "a container, for probes and scraping).")
    health_stuck_s: float = Field(5.0, gt=0, description="/healthz is not ready once a dependency has failed, "
                                                         "or one call has waited, for this long.")
    reconcile_interval_s: float = Field(0.0, ge=0, description="Run the reconciler every this many seconds on "
                                                               "the group's leader worker; 0 = never.")
    reconcile_grace_s: float = Field(600.0, ge=0, description="The reconciler replays only objects older than "
                                                              "this that have no outcome.")
    reconcile_prefix: str = Field("", description="The worker's reconciler looks only at keys under this prefix.")
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="Structured JSON logs (one object per line).")
    data_dir: Path = Field(DEFAULT_STATE_DIR / "worker-data", description="faust's data directory (one "
                           "sub-directory per consumer group); relative paths are from the working directory.")

    # --- Ledger (streams/ledger: every outcome and curator verdict in a database; docs/ledger.md) ------
    ledger_url: str = Field("sqlite:///.artroute/ledger/ledger.db",
                            description="Ledger database URL: SQLite file (embedded) or "
                                        "postgresql+psycopg://user@host:5432/db (production).")
    ledger_password: SecretStr | None = Field(None, description="Ledger database password, put into the URL "
                                                                "(from a Secret).")
    ledger_consumer_group: str = Field("artroute-ledger", description="Consumer group of the ledger's ingest.")
    ledger_batch: int = Field(1000, ge=1, description="Messages per ledger database transaction (at most).")
    verdicts_topic: str = Field("artroute.verdicts", description="Curator verdicts, keyed by object key.")
    audit_rate: float = Field(0.02, ge=0, le=1, description="Share of auto-routed decisions the ledger also puts "
                                                            "into review (audit sample; by decision id hash).")
    ledger_taxonomy: str = Field("", description="Taxonomy (name or YAML) whose classes a verdict may name; "
                                                 "empty: the labels seen in the model's decisions.")
    ledger_api_host: str = Field("127.0.0.1", description="Ledger HTTP API listen address (ledger serve).")
    ledger_api_port: int = Field(8300, ge=0, le=65535, description="Ledger HTTP API port (ledger serve).")
    ledger_api_token: SecretStr | None = Field(None, description="Bearer token the ledger HTTP API requires "
                                                                 "(from a Secret); unset: no token.")

    # --- Curator console (streams/console: review queue, search, model page; docs/console.md) ----------
    console_host: str = Field("127.0.0.1", description="Console listen address (0.0.0.0 in a container).")
    console_port: int = Field(8400, ge=0, le=65535, description="Console HTTP port.")
    console_public_url: str = Field("", description="The console's URL as browsers reach it (https://... behind "
                                                    "TLS): OIDC redirect URI, and https makes cookies Secure; "
                                                    "empty: taken from each request.")
    console_secret_key: SecretStr | None = Field(None, description="Key signing the session cookies (from a "
                                                                   "Secret); unset: random per process, "
                                                                   "so sessions end when it restarts.")
    console_users_file: Path = Field(DEFAULT_STATE_DIR / "console" / "users.json",
                                     description="Local accounts, argon2 hashes (`python -m streams console "
                                                 "add-user`).")
    console_local_accounts: bool = Field(True, description="Offer the login form for local accounts (turn off "
                                                           "when everyone signs in through OIDC).")
    console_session_hours: float = Field(12.0, gt=0, description="A login lasts this long at most.")
    console_login_attempts: int = Field(5, ge=1, description="Failed logins per user name and address within "
                                                             "CONSOLE_LOGIN_WINDOW_S before login is refused.")
    console_login_window_s: float = Field(300.0, gt=0, description="Window of the login rate limit (seconds).")
    console_stats_ttl_s: float = Field(30.0, ge=0, description="The model page's figures are recomputed in the "
                                                               "background once older than this.")
    console_oidc_issuer: str = Field("", description="OpenID Connect issuer URL (with /.well-known/openid-"
                                                     "configuration); empty: local accounts only.")
    console_oidc_client_id: str = Field("", description="OIDC client id of the console.")
    console_oidc_client_secret: SecretStr | None = Field(None, description="OIDC client secret (from a Secret).")
    console_oidc_username_claim: str = Field("preferred_username", description="ID-token claim naming the "
                                                                                "curator in verdicts.")
    console_oidc_roles_claim: str = Field("groups", description="ID-token claim listing the user's groups/roles.")
    console_oidc_admin_role: str = Field("artroute-admin", description="Group that makes a console admin.")
    console_oidc_curator_role: str = Field("artroute-curator", description="Group that makes a curator; empty: "
                                                                           "every user the provider signs in.")

    @field_validator("deadletter_max_bytes")
    @classmethod
    def _dead_letters_fit_the_producer(cls, v: int, info: ValidationInfo) -> int:
        limit = info.data.get("kafka_max_message_bytes")
        if limit is not None and v > limit:
            raise ValueError(f"must not exceed ARTROUTE_KAFKA_MAX_MESSAGE_BYTES ({limit})")
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        stack = JsonConfigSettingsSource(settings_cls, json_file=endpoints_file())
        return init_settings, env_settings, stack, file_secret_settings

    def kafka_client_kwargs(self) -> dict:
        """aiokafka connection keyword arguments for these settings (SASL/TLS wired through)."""
        import ssl

        kw: dict = {"bootstrap_servers": self.kafka_brokers.split(","),
                    "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
            if self.kafka_ssl_certfile:
                ctx.load_cert_chain(str(self.kafka_ssl_certfile),
                                    str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None)
            kw["ssl_context"] = ctx
        if self.kafka_security_protocol.startswith("SASL"):
            if not (self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password):
                raise ValueError("ARTROUTE_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD are required "
                                 f"with ARTROUTE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
            kw.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                      sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        return kw
