"""One typed settings object; every key has a default and a one-line doc.

Values come from ``TRACKER_<KEY>`` environment variables, optionally layered over a
TOML file named by ``TRACKER_CONFIG``. Secrets (passwords, tokens, DSNs) are only ever
read from the environment or that file, never from the repository.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TILE_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9_./{}@-]*\{z\}[A-Za-z0-9_./{}@-]*\Z")
"""A tile URL template the dashboard's Content-Security-Policy can name by its origin (no quotes, spaces or ;)."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class Settings:
    """Service settings. ``Settings.describe()`` lists them for the README and ``tracker config``."""

    mqtt_host: str = field(default="127.0.0.1", metadata=_doc("MQTT broker host"))
    mqtt_port: int = field(default=1883, metadata=_doc("MQTT broker port"))
    mqtt_username: str = field(default="", metadata=_doc("MQTT user of the service (ACL: read pings, write alerts)"))
    mqtt_password: str = field(default="", metadata=_doc("MQTT password of the service"))
    mqtt_client_id: str = field(
        default="",
        metadata=_doc(
            "fixed client id of the persistent session (empty: the MQTT user, which is what our broker enforces)"
        ),
    )
    mqtt_session_expiry_s: int = field(
        default=7 * 24 * 3600, metadata=_doc("how long the broker keeps the session while the service is away")
    )
    mqtt_reconnect_max_s: float = field(default=30.0, metadata=_doc("upper bound of reconnect back-off"))
    mqtt_tls: bool = field(default=False, metadata=_doc("connect over TLS, trusting the system CAs (or mqtt_tls_ca)"))
    mqtt_tls_ca: str = field(default="", metadata=_doc("CA file the broker's certificate must chain to (TLS)"))
    mqtt_tls_cert: str = field(default="", metadata=_doc("client certificate file, when the broker asks for one (TLS)"))
    mqtt_tls_key: str = field(default="", metadata=_doc("private key of the client certificate (TLS)"))
    mqtt_tls_insecure: bool = field(
        default=False, metadata=_doc("skip the broker host name check (the chain is still verified); tests only")
    )
    mqtt_admin_username: str = field(
        default="", metadata=_doc("broker admin account of `tracker device add/revoke`; never given to `tracker run`")
    )
    mqtt_admin_password: str = field(default="", metadata=_doc("password of the broker admin account"))
    ping_topics: tuple[str, ...] = field(
        default=("trackers/+/ping", "owntracks/+/+"), metadata=_doc("topics subscribed for fixes")
    )
    inspection_topic: str = field(default="customs/inspections", metadata=_doc("topic for customs decisions"))
    deadletter_topic: str = field(default="deadletter/pings", metadata=_doc("topic where rejected payloads are echoed"))
    alert_topic_prefix: str = field(default="alerts", metadata=_doc("alerts go to <prefix>/<port>/<severity>/<kind>"))
    db_dsn: str = field(
        default="postgresql://tracker@127.0.0.1:5433/tracker", metadata=_doc("PostgreSQL DSN (password via env)")
    )
    db_pool_max: int = field(default=8, metadata=_doc("maximum database connections"))
    db_lock_timeout_s: float = field(
        default=5.0, metadata=_doc("a write waiting this long for a lock fails and is retried (0: wait for ever)")
    )
    db_owner_dsn: str = field(
        default="", metadata=_doc("DSN of the schema owner: only `tracker migrate` uses it, never the service")
    )
    db_service_role: str = field(
        default="", metadata=_doc("role `tracker migrate` grants the service's rights (default: TRACKER_DB_DSN's user)")
    )
    http_host: str = field(default="127.0.0.1", metadata=_doc("HTTP API bind address"))
    http_port: int = field(default=8080, metadata=_doc("HTTP API port"))
    http_tls_cert: str = field(
        default="", metadata=_doc("PEM certificate chain: with http_tls_key the API listener speaks HTTPS only")
    )
    http_tls_key: str = field(default="", metadata=_doc("PEM private key of http_tls_cert"))
    ops_host: str = field(default="", metadata=_doc("bind address of the ops listener (empty: http_host)"))
    ops_port: int = field(
        default=0,
        metadata=_doc("port for /metrics and /readyz, which then leave the API listener (0: they stay on it)"),
    )
    api_db_timeout_s: float = field(
        default=5.0, metadata=_doc("an API request waiting longer than this on the database answers 503")
    )
    api_write_timeout_s: float = field(
        default=5.0, metadata=_doc("an API write (inspection, pairing) not stored within this answers 503")
    )
    api_auth_fail_burst: float = field(
        default=10.0, metadata=_doc("failed authentications an address may make at once before 429 (0: no limit)")
    )
    api_auth_fail_per_s: float = field(
        default=1.0, metadata=_doc("rate at which an address earns back failed authentications")
    )
    api_token_cache_ttl_s: float = field(
        default=30.0, metadata=_doc("API token lookups are cached this long (revocation lags by as much)")
    )
    api_token_cache_size: int = field(default=4096, metadata=_doc("API token lookups cached at most"))
    admin_token: str = field(
        default="", metadata=_doc("bootstrap admin API token (create others with `tracker token`)")
    )
    unknown_devices: str = field(
        default="reject", metadata=_doc("'reject' pings of unregistered devices or 'register' them as trucks")
    )
    max_payload_bytes: int = field(default=65536, metadata=_doc("payloads larger than this are dead-lettered"))
    max_future_s: float = field(default=300.0, metadata=_doc("fixes further in the future than this are rejected"))
    batch_max: int = field(
        default=2000, metadata=_doc("most messages per ingest micro-batch (it takes what is queued)")
    )
    batch_wait_ms: float = field(default=20.0, metadata=_doc("unused: a micro-batch no longer waits to fill"))
    reorder_window_s: float = field(
        default=30.0, metadata=_doc("fixes up to this much older than the newest are judged in event-time order")
    )
    hysteresis_m: float = field(default=25.0, metadata=_doc("a fence is left only this far outside its edge"))
    entry_margin_m: float = field(
        default=10.0, metadata=_doc("a fence is entered only this far inside its edge (where it is wide enough)")
    )
    fence_files: tuple[str, ...] = field(
        default=(), metadata=_doc("extra fence-set files loaded at start besides those stored in the database")
    )
    detectors_file: str = field(
        default="",
        metadata=_doc("TOML file with a [detectors] table of thresholds (example: geofences/detectors.toml)"),
    )
    ingest_max_lag_s: float = field(
        default=60.0, metadata=_doc("/readyz says not ready when a message waits longer than this for its commit")
    )
    ingest_stall_s: float = field(
        default=15.0, metadata=_doc("/readyz says not ready when the database has refused writes this long")
    )
    tick_interval_s: float = field(default=5.0, metadata=_doc("how often timeouts (going dark...) are evaluated"))
    outbox_poll_s: float = field(default=1.0, metadata=_doc("outbox retry poll interval"))
    webhook_urls: tuple[str, ...] = field(default=(), metadata=_doc("URLs that receive signed alert POSTs"))
    webhook_secret: str = field(default="", metadata=_doc("HMAC key signing webhook deliveries (required with URLs)"))
    webhook_min_severity: str = field(default="medium", metadata=_doc("lowest alert severity sent to webhooks"))
    webhook_max_attempts: int = field(
        default=8, metadata=_doc("per-organisation webhooks: a delivery is dead after this many failed attempts")
    )
    webhook_backoff_s: float = field(
        default=2.0, metadata=_doc("per-organisation webhooks: first retry delay, doubled after each failure")
    )
    webhook_backoff_max_s: float = field(default=600.0, metadata=_doc("per-organisation webhooks: longest retry delay"))
    webhook_timeout_s: float = field(default=10.0, metadata=_doc("per-organisation webhooks: timeout of one POST"))
    webhook_concurrency: int = field(default=8, metadata=_doc("per-organisation webhooks: POSTs in flight at most"))
    webhook_allow_private: bool = field(
        default=False,
        metadata=_doc("let registered webhooks point at loopback/private addresses (development and tests only)"),
    )
    stream_queue: int = field(
        default=500, metadata=_doc("live feeds: alert events waiting per viewer before it is disconnected as slow")
    )
    stream_max_positions: int = field(
        default=20_000, metadata=_doc("live feeds: positions waiting per viewer before it is disconnected as slow")
    )
    stream_positions_interval_s: float = field(
        default=0.25, metadata=_doc("live feeds: positions are sent in batches at most this often")
    )
    stream_send_buffer: int = field(
        default=262_144,
        metadata=_doc("live feeds: kernel send buffer per SSE/WebSocket viewer, bytes (0: the system's)"),
    )
    stream_replay_max: int = field(
        default=1000, metadata=_doc("live feeds: most events replayed after Last-Event-ID (more missed: 'reset')")
    )
    stream_replay_s: float = field(
        default=24 * 3600.0, metadata=_doc("live feeds: how far back Last-Event-ID replays (older: 'reset')")
    )
    dashboard_tile_url: str = field(
        default="",
        metadata=_doc("online map tiles under the dashboard's fences, 'https://host/{z}/{x}/{y}.png' (empty: none)"),
    )
    osmand_port: int = field(
        default=0, metadata=_doc("port for OsmAnd/Traccar Client devices over HTTP (0: off; bind is http_host)")
    )
    timescale_jobs_s: float = field(
        default=0.0,
        metadata=_doc("run TimescaleDB policies in the foreground every N s (0: leave them to its scheduler)"),
    )
    audit_key_file: str = field(
        default="", metadata=_doc("Ed25519 key signing the alert chain (PEM or 32-byte seed; mode 600)")
    )
    audit_key: str = field(default="", metadata=_doc("the same key inline (hex, base64 or PEM) instead of a file"))
    audit_checkpoint_s: float = field(
        default=60.0, metadata=_doc("how often the signed chain head is stored and published (and at shutdown)")
    )
    audit_anchor_file: str = field(
        default="",
        metadata=_doc("file outside the database keeping the last checkpoint; the chain is checked against it"),
    )
    audit_unsigned: bool = field(
        default=False, metadata=_doc("run without a signing key (development only: the log is then unanchored)")
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Layer: defaults < TOML file (``TRACKER_CONFIG``) < ``TRACKER_*`` variables."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        config_path = env.get("TRACKER_CONFIG")
        if config_path:
            with Path(config_path).open("rb") as fh:
                data = tomllib.load(fh)
            values.update(data.get("tracker", data))
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown setting {key!r} in {config_path}")
        for f in dataclasses.fields(cls):
            raw = env.get("TRACKER_" + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        out: dict[str, Any] = {}
        for name, value in values.items():
            out[name] = _coerce(name, hints[name], value)
        settings = cls(**out)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.unknown_devices not in ("reject", "register"):
            raise ValueError("TRACKER_UNKNOWN_DEVICES must be 'reject' or 'register'")
        if self.batch_max < 1:
            raise ValueError("TRACKER_BATCH_MAX must be >= 1")
        if self.webhook_urls and len(self.webhook_secret) < 16:
            raise ValueError("TRACKER_WEBHOOK_SECRET of at least 16 characters is required with TRACKER_WEBHOOK_URLS")
        for url in self.webhook_urls:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"TRACKER_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        if self.webhook_min_severity not in ("info", "low", "medium", "high", "critical"):
            raise ValueError("TRACKER_WEBHOOK_MIN_SEVERITY must be info|low|medium|high|critical")
        if self.webhook_max_attempts < 1 or self.webhook_concurrency < 1 or self.webhook_timeout_s <= 0:
            raise ValueError("TRACKER_WEBHOOK_MAX_ATTEMPTS, _CONCURRENCY and _TIMEOUT_S must be positive")
        if self.stream_queue < 1 or self.stream_max_positions < 1 or self.stream_replay_max < 0:
            raise ValueError("TRACKER_STREAM_QUEUE and TRACKER_STREAM_MAX_POSITIONS must be positive")
        if self.audit_key_file and self.audit_key:
            raise ValueError("set TRACKER_AUDIT_KEY_FILE or TRACKER_AUDIT_KEY, not both")
        if self.audit_checkpoint_s <= 0:
            raise ValueError("TRACKER_AUDIT_CHECKPOINT_S must be > 0")
        if bool(self.http_tls_cert) != bool(self.http_tls_key):
            raise ValueError("TRACKER_HTTP_TLS_CERT and TRACKER_HTTP_TLS_KEY go together")
        if self.ops_port and self.ops_port == self.http_port:
            raise ValueError("TRACKER_OPS_PORT must differ from TRACKER_HTTP_PORT")
        if self.api_auth_fail_burst > 0 and self.api_auth_fail_per_s <= 0:
            raise ValueError("TRACKER_API_AUTH_FAIL_PER_S must be > 0")
        if self.api_token_cache_size < 1 or self.api_db_timeout_s <= 0 or self.api_write_timeout_s <= 0:
            raise ValueError("TRACKER_API_TOKEN_CACHE_SIZE and the API timeouts must be positive")
        if self.dashboard_tile_url and not _TILE_URL_RE.match(self.dashboard_tile_url):
            raise ValueError("TRACKER_DASHBOARD_TILE_URL must be https://host/...{z}...{x}...{y}... without quotes")
        if self.mqtt_tls_key and not self.mqtt_tls_cert:
            raise ValueError("TRACKER_MQTT_TLS_KEY needs TRACKER_MQTT_TLS_CERT")
        if (self.mqtt_tls_cert or self.mqtt_tls_insecure) and not self.mqtt_tls_enabled:
            raise ValueError("TRACKER_MQTT_TLS_CERT / _INSECURE need TLS: TRACKER_MQTT_TLS=true or TRACKER_MQTT_TLS_CA")

    @property
    def mqtt_tls_enabled(self) -> bool:
        """A CA file alone means TLS: nobody names a CA for a plain connection."""
        return self.mqtt_tls or bool(self.mqtt_tls_ca)

    @property
    def mqtt_session_client_id(self) -> str:
        """The broker (use_username_as_clientid) replaces any other id by the user name anyway."""
        return self.mqtt_client_id or self.mqtt_username or "port-tracker-ingest"

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(env var, default, doc) for each setting."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default
            if isinstance(default, bool):
                shown = str(default).lower()
            else:
                shown = ",".join(default) if isinstance(default, tuple) else str(default)
            rows.append(("TRACKER_" + f.name.upper(), shown, str(f.metadata.get("doc", ""))))
        return rows

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets masked."""
        out = dataclasses.asdict(self)
        for key in ("mqtt_password", "mqtt_admin_password", "admin_token", "webhook_secret", "audit_key"):
            if out[key]:
                out[key] = "***"
        for key in ("db_dsn", "db_owner_dsn"):
            dsn = out[key]
            if "@" in dsn and ":" in dsn.split("@")[0].split("//")[-1]:
                head, tail = dsn.split("@", 1)
                out[key] = head.rsplit(":", 1)[0] + ":***@" + tail
        return out


def _coerce(name: str, hint: Any, value: Any) -> Any:
    try:
        if hint is bool:
            return _boolean(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if typing.get_origin(hint) is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: cannot read {value!r} as {hint}") from exc
    raise TypeError(f"setting {name}: unsupported type {hint}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")
