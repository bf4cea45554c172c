-- The alert log as an append-only, signed chain of facts (tracker/audit.py) and signed
-- checkpoints of its head. The old single-row head goes: a head kept next to the chain, by
-- the same role, let whoever rewrote the chain rewrite the head too. The service role's
-- rights are granted by `tracker migrate` (Store._grant_service): INSERT and SELECT here,
-- never UPDATE, DELETE or TRUNCATE; the triggers below refuse those to anyone but a
-- table owner who first disables them, which the signed checkpoints then expose.

CREATE TABLE IF NOT EXISTS alert_links (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    alert_id    uuid NOT NULL REFERENCES alerts(alert_id),
    fact        text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    doc         text NOT NULL,          -- canonical JSON, hashed byte for byte
    prev_hash   text NOT NULL,
    hash        text NOT NULL UNIQUE,
    sig         text                    -- Ed25519 over the hash; NULL only when run without a key
);
CREATE INDEX IF NOT EXISTS alert_links_alert ON alert_links (alert_id, seq);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id          bigserial PRIMARY KEY,
    count       bigint NOT NULL,
    head_hash   text NOT NULL,
    at          timestamptz NOT NULL,
    key_id      text NOT NULL,
    body        text NOT NULL,          -- the canonical JSON that was signed
    signature   text NOT NULL
);

-- Alerts stored before this migration: the service gives each one 'legacy' link holding it
-- as found. Only this list qualifies, and only the owner can write it.
CREATE TABLE IF NOT EXISTS audit_legacy (
    alert_id    uuid PRIMARY KEY REFERENCES alerts(alert_id)
);
INSERT INTO audit_legacy (alert_id) SELECT alert_id FROM alerts ON CONFLICT DO NOTHING;

DROP TABLE IF EXISTS alert_chain;

CREATE OR REPLACE FUNCTION tracker_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alert_links', 'audit_checkpoints', 'alert_updates', 'audit_legacy'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW'
                       ' EXECUTE FUNCTION tracker_append_only()', t || '_append_only', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_no_truncate', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION tracker_append_only()', t || '_no_truncate', t);
    END LOOP;
END
$$;

-- Monthly ping partitions are created on the fly by the writer; the service role owns no
-- table, so it asks this function, which runs as the owner and can create nothing else.
CREATE OR REPLACE FUNCTION tracker_ensure_ping_partition(month_start timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    lo timestamp := date_trunc('month', month_start AT TIME ZONE 'UTC');  -- months are UTC months
    name text := 'pings_' || to_char(lo, 'YYYYMM');
BEGIN
    IF to_regclass('public.' || name) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I PARTITION OF public.pings FOR VALUES FROM (%L) TO (%L)',
                       name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
    END IF;
END
$$;
REVOKE ALL ON FUNCTION tracker_ensure_ping_partition(timestamptz) FROM PUBLIC;
