-- Later facts about raised alerts (a stop ended, a signal came back), customs decisions
-- and truck-container pairings. Alert rows themselves stay as hashed; updates are appended.

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS ended_at timestamptz;

CREATE TABLE IF NOT EXISTS alert_updates (
    id          bigserial PRIMARY KEY,
    alert_id    uuid NOT NULL REFERENCES alerts(alert_id),
    ts          timestamptz NOT NULL,
    fields      jsonb NOT NULL,
    closes      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, ts, closes)
);

CREATE TABLE IF NOT EXISTS inspections (
    id            bigserial PRIMARY KEY,
    inspection_id text UNIQUE,
    container_no  text NOT NULL,
    result        text NOT NULL CHECK (result IN ('cleared', 'selected', 'held', 'loaded')),
    ts            timestamptz NOT NULL,
    facility      text,
    seal          text,
    source        text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inspections_container ON inspections (container_no, ts DESC);

CREATE TABLE IF NOT EXISTS pairings (
    id            bigserial PRIMARY KEY,
    container_id  text NOT NULL,
    truck_id      text NOT NULL,
    since         timestamptz NOT NULL,
    until         timestamptz,
    inferred      boolean NOT NULL DEFAULT false,
    created_by    text
);
CREATE INDEX IF NOT EXISTS pairings_container ON pairings (container_id, since DESC);

CREATE INDEX IF NOT EXISTS devices_container_no ON devices (container_no) WHERE container_no IS NOT NULL;

ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('operator', 'insurer', 'security', 'admin', 'customs'));
