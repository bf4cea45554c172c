-- Trips (tracker/core/trips.py): one row per journey of a device, upserted by the ingest batch that
-- closed it or changed it (the id is derived from device and start, so a replay rewrites the same row).
-- Summary columns serve the list routes; stops, fence visits and the customs timeline are JSON as the
-- core produced them. Trips are derived from the stored fixes: they can be rebuilt, but the service
-- never deletes them (see Store._grant_service).

CREATE TABLE IF NOT EXISTS trips (
    trip_id           uuid PRIMARY KEY,
    device_id         text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('truck', 'container', 'seal')),
    container_no      text,                         -- the box this container tracker rides on
    carried           text[] NOT NULL DEFAULT '{}', -- boxes a truck hauled during the trip (their numbers)
    partners          text[] NOT NULL DEFAULT '{}', -- devices paired during the trip (trucks of a box, boxes of a truck)
    start_ts          timestamptz NOT NULL,
    end_ts            timestamptz NOT NULL,         -- for an open trip: its latest fix so far
    closed            boolean NOT NULL,
    end_reason        text,
    origin_fence      text,
    destination_fence text,
    port              text,
    start_lon         double precision NOT NULL,
    start_lat         double precision NOT NULL,
    end_lon           double precision NOT NULL,
    end_lat           double precision NOT NULL,
    distance_m        double precision NOT NULL,
    duration_s        double precision NOT NULL,
    moving_s          double precision NOT NULL,
    stopped_s         double precision NOT NULL,
    stops             jsonb NOT NULL DEFAULT '[]',
    visits            jsonb NOT NULL DEFAULT '[]',
    customs           jsonb NOT NULL DEFAULT '{}',
    alert_ids         uuid[] NOT NULL DEFAULT '{}',
    truncated         boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (end_ts >= start_ts)
);
CREATE INDEX IF NOT EXISTS trips_device_start ON trips (device_id, start_ts);
CREATE INDEX IF NOT EXISTS trips_container_start ON trips (container_no, start_ts) WHERE container_no IS NOT NULL;
CREATE INDEX IF NOT EXISTS trips_carried ON trips USING gin (carried);
