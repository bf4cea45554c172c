-- Per-device state in the core's own binary codec (tracker/core/codec.py: msgpack of typed
-- msgspec Structs, a few hundred bytes a device) instead of jsonb: the service writes every
-- changed device once per batch and nothing in the database reads inside the state. Rows
-- written before this migration keep their JSON text, as UTF-8 bytes; the service reads such
-- a row once (a JSON object starts with '{', which no encoded state does) and writes it back
-- in the new form with the device's next batch.
ALTER TABLE device_state ALTER COLUMN state TYPE bytea USING convert_to(state::text, 'UTF8');
