-- Live feeds and per-organisation webhooks.
--
-- feed_events: every alert event (raised, updated) announced to the live feeds, numbered in the
-- order the single delivery task recorded it. That number is the event id of SSE (`id:`) and of
-- the WebSocket stream, so a viewer that reconnects with Last-Event-ID gets exactly what it missed
-- from here. One row per announcing outbox row (outbox_id UNIQUE): recording twice is a no-op.
--
-- webhooks: endpoints an organisation registered through the API, with the scope of whoever
-- registered them (role, organisation, device scope) so a delivery carries only what that
-- organisation may see. `secret` is the HMAC key the service signs with; it is shown once at
-- creation and must be treated like a password (database backups hold it).
--
-- webhook_deliveries / webhook_attempts: one delivery per (webhook, event), every attempt kept.

CREATE TABLE IF NOT EXISTS feed_events (
    seq         bigserial PRIMARY KEY,
    outbox_id   bigint NOT NULL UNIQUE REFERENCES outbox(id),
    alert_id    uuid NOT NULL REFERENCES alerts(alert_id),
    event       text NOT NULL CHECK (event IN ('raised', 'updated')),
    payload     jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS feed_events_recorded ON feed_events (recorded_at);

CREATE TABLE IF NOT EXISTS webhooks (
    id          uuid PRIMARY KEY,
    org         text,
    role        text NOT NULL,
    devices     text[],                 -- NULL: not limited by device
    created_by  text NOT NULL,
    url         text NOT NULL,
    secret      text NOT NULL,
    ports       text[] NOT NULL DEFAULT '{}',       -- empty: any
    severities  text[] NOT NULL DEFAULT '{}',
    kinds       text[] NOT NULL DEFAULT '{}',
    events      text[] NOT NULL DEFAULT '{raised,updated}',
    from_seq    bigint NOT NULL,        -- events after this one are delivered
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    deleted_by  text
);
CREATE INDEX IF NOT EXISTS webhooks_org ON webhooks (org) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          bigserial PRIMARY KEY,
    webhook_id  uuid NOT NULL REFERENCES webhooks(id),
    event_seq   bigint NOT NULL REFERENCES feed_events(seq),
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status integer,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_hook ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries(id),
    at          timestamptz NOT NULL DEFAULT now(),
    http_status integer,
    error       text,
    duration_ms integer NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- How far the webhook matcher has read feed_events (one row).
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq         bigint NOT NULL
);
INSERT INTO webhook_cursor (id, seq) VALUES (true, 0) ON CONFLICT DO NOTHING;
