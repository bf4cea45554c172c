-- Base schema. The pings table itself is created by the store (hypertable when
-- TimescaleDB is available, native range partitions otherwise), see store.py.

CREATE TABLE IF NOT EXISTS devices (
    device_id     text PRIMARY KEY,
    kind          text NOT NULL DEFAULT 'truck' CHECK (kind IN ('truck', 'container', 'seal')),
    name          text,
    container_no  text,
    registered_at timestamptz NOT NULL DEFAULT now(),
    auto_registered boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS fence_sets (
    port        text PRIMARY KEY,
    name        text NOT NULL,
    source      text NOT NULL DEFAULT '',
    licence     text NOT NULL DEFAULT '',
    geojson     jsonb NOT NULL,
    sha256      text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS geofences (
    fence_id    text PRIMARY KEY,
    port        text NOT NULL REFERENCES fence_sets(port) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL,
    geometry    jsonb NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS geofences_port ON geofences (port);

CREATE TABLE IF NOT EXISTS device_state (
    device_id   text PRIMARY KEY,
    state       jsonb NOT NULL,
    last_ts     timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id    uuid PRIMARY KEY,
    seq         bigserial UNIQUE,
    kind        text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    status      text NOT NULL CHECK (status IN ('logged', 'open', 'acknowledged', 'resolved')),
    device_id   text NOT NULL,
    port        text,
    fence_id    text,
    ts          timestamptz NOT NULL,
    message     text NOT NULL,
    evidence    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_by text,
    resolved_at timestamptz,
    resolution  text,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (status, severity, ts DESC);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, ts DESC);

-- Single row holding the head of the alert hash chain; locked by each writer transaction.
CREATE TABLE IF NOT EXISTS alert_chain (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    head_hash   text NOT NULL,
    head_seq    bigint NOT NULL DEFAULT 0
);
INSERT INTO alert_chain (id, head_hash) VALUES (true, repeat('0', 64)) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    alert_id    uuid NOT NULL REFERENCES alerts(alert_id),
    channel     text NOT NULL DEFAULT 'mqtt',
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    delivered_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

CREATE TABLE IF NOT EXISTS dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL,
    topic       text,
    device_id   text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, received_at DESC);

CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('operator', 'insurer', 'security', 'admin')),
    scope       jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
