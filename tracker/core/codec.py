"""The one codec of per-device state: msgpack through msgspec, at the store boundary only.

The core keeps states as typed objects between fixes; this module turns a whole
:class:`~tracker.core.state.DeviceState` into bytes once per batch (the ``device_state`` row)
and back once at restore. Structs are encoded as arrays (no field names) and trailing
defaults are left out, so a device costs a few hundred bytes; timestamps are msgpack's own
timestamp extension (microseconds exact, UTC).

Compatibility: fields are only ever appended (with a default) to a state Struct, never
reordered or removed, so a state written by an older version still decodes.
"""

from __future__ import annotations

import msgspec

from tracker.core.state import DeviceState

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(DeviceState)


def encode(state: DeviceState) -> bytes:
    return _ENCODER.encode(state)


def decode(data: bytes) -> DeviceState:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not a valid state."""
    return _DECODER.decode(data)
