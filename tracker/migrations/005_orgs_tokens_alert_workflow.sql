-- Organisations own tokens and devices; insurers' organisations hold coverage of containers
-- for dates; the alert workflow (assign, reopen) and the record of who read inspection data.
-- Tokens and devices stored before this migration belong to the 'default' organisation, which
-- sees every port, so existing tokens keep the view they had.

CREATE TABLE IF NOT EXISTS organisations (
    org_id      text PRIMARY KEY CHECK (org_id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    name        text NOT NULL,
    ports       text[],                 -- the ports a security/customs desk sees; NULL: every port
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO organisations (org_id, name) VALUES ('default', 'Default organisation') ON CONFLICT DO NOTHING;

ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS token_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default' REFERENCES organisations(org_id);
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS created_by text;
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_token_id ON api_tokens (token_id);

-- NULL: the default organisation (devices registered by ingest itself belong to it)
ALTER TABLE devices ADD COLUMN IF NOT EXISTS org_id text REFERENCES organisations(org_id);
ALTER TABLE devices ADD COLUMN IF NOT EXISTS deactivated_at timestamptz;
CREATE INDEX IF NOT EXISTS devices_org ON devices (org_id);

CREATE TABLE IF NOT EXISTS coverage (
    id           bigserial PRIMARY KEY,
    org_id       text NOT NULL REFERENCES organisations(org_id),
    container_no text NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz NOT NULL CHECK (valid_to > valid_from),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS coverage_org ON coverage (org_id, container_no);

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS assigned_to text;
CREATE INDEX IF NOT EXISTS alerts_seq_desc ON alerts (ts DESC, seq DESC);

-- Every read of inspection data: who, what, when, from where. Append-only like the alert chain.
CREATE TABLE IF NOT EXISTS inspection_reads (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    role        text NOT NULL,
    org_id      text,
    remote      text,
    route       text NOT NULL,
    query       jsonb NOT NULL DEFAULT '{}',
    containers  text[] NOT NULL DEFAULT '{}',
    rows        integer NOT NULL
);
CREATE INDEX IF NOT EXISTS inspection_reads_at ON inspection_reads (at DESC);

DROP TRIGGER IF EXISTS inspection_reads_append_only ON inspection_reads;
CREATE TRIGGER inspection_reads_append_only BEFORE UPDATE OR DELETE ON inspection_reads FOR EACH ROW
    EXECUTE FUNCTION tracker_append_only();
DROP TRIGGER IF EXISTS inspection_reads_no_truncate ON inspection_reads;
CREATE TRIGGER inspection_reads_no_truncate BEFORE TRUNCATE ON inspection_reads FOR EACH STATEMENT
    EXECUTE FUNCTION tracker_append_only();
