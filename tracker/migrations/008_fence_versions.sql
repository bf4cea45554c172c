-- Fence-set versions. Every change to a port's fences (a whole set uploaded, one fence put or
-- deleted, a set loaded from the command line) is a new version: immutable, numbered per port, with
-- who made it, when, and the SHA-256 of its canonical GeoJSON. The fences of a version are rows of
-- their own, so "which fences were in force" is a query, not a parse. Alerts record the version(s)
-- they were raised under (alerts.fence_versions, also inside their signed 'raised' link), so nobody
-- can later claim an alert came from a different fence set. fence_sets/geofences stay as the
-- current projection of the newest version of each port.

CREATE TABLE IF NOT EXISTS fence_set_versions (
    port        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    author      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    change      text NOT NULL CHECK (change IN ('upload', 'put', 'delete', 'import', 'migrated')),
    fence_id    text,                   -- the fence a 'put' or 'delete' changed
    name        text NOT NULL DEFAULT '',
    source      text NOT NULL DEFAULT '',
    licence     text NOT NULL DEFAULT '',
    geojson     jsonb NOT NULL,         -- the set as the loader normalised it
    sha256      text NOT NULL,          -- of the canonical JSON of geojson
    fences      integer NOT NULL,
    PRIMARY KEY (port, version)
);

CREATE TABLE IF NOT EXISTS fence_set_version_fences (
    port        text NOT NULL,
    version     integer NOT NULL,
    fence_id    text NOT NULL,
    name        text NOT NULL,
    kind        text NOT NULL,
    geometry    jsonb NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (port, version, fence_id),
    FOREIGN KEY (port, version) REFERENCES fence_set_versions (port, version)
);
CREATE INDEX IF NOT EXISTS fence_set_version_fences_id ON fence_set_version_fences (fence_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['fence_set_versions', 'fence_set_version_fences'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW'
                       ' EXECUTE FUNCTION tracker_append_only()', t || '_append_only', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_no_truncate', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT'
                       ' EXECUTE FUNCTION tracker_append_only()', t || '_no_truncate', t);
    END LOOP;
END
$$;

-- {port: {"version": n or null (a fence file), "sha256": "..."}}; NULL for alerts raised before this
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS fence_versions jsonb;

-- the sets stored so far become version 1 of their port
INSERT INTO fence_set_versions (port, version, author, created_at, change, name, source, licence, geojson, sha256, fences)
SELECT s.port, 1, 'migration', s.loaded_at, 'migrated', s.name, s.source, s.licence, s.geojson, s.sha256,
       (SELECT count(*) FROM geofences g WHERE g.port = s.port)
FROM fence_sets s
ON CONFLICT DO NOTHING;
INSERT INTO fence_set_version_fences (port, version, fence_id, name, kind, geometry, properties)
SELECT g.port, 1, g.fence_id, g.name, g.kind, g.geometry, g.properties FROM geofences g
ON CONFLICT DO NOTHING;
