"""The one codec of per-device state: msgpack through msgspec, at the store boundary only.

The core keeps states as typed objects between fixes; this module turns a whole
:class:`~tracker.core.state.DeviceState` into bytes once per batch (the ``device_state`` row)
and back once at restore. Structs are encoded as arrays (no field names) and trailing
defaults are left out, so a device costs a few hundred bytes; timestamps are msgpack's own
timestamp extension (microseconds exact, UTC).

The reorder log (``DeviceState.log``) keeps, per recent fix, the whole state before it. Each
such state differs from the one after it in a few slots only (the fix moved the motion
cluster, the dark rhythm, the integrity check), so an entry is stored as those slots alone and
rebuilt, newest first, from the state that follows it.

Compatibility: fields are only ever appended (with a default) to a state Struct, never
reordered or removed, so a state written by an older version still decodes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from msgspec.structs import replace

from tracker.core import geofence
from tracker.core.dark import DarkState
from tracker.core.dwell import DwellState
from tracker.core.fix import Fix
from tracker.core.inspection import AccessState
from tracker.core.integrity import IntegrityState
from tracker.core.model import Alert, AlertUpdate, Ping
from tracker.core.motion import MotionState
from tracker.core.pairing import PairingState
from tracker.core.rendezvous import RendezvousState
from tracker.core.state import DeviceState, Entry
from tracker.core.stops import StopState
from tracker.core.trips import TripState

_SHORT = {
    "last": "l",
    "fences": "f",
    "integrity": "i",
    "motion": "m",
    "geofence_pending": "g",
    "unexpected_stop": "s",
    "signal_lost": "d",
    "post_inspection_access": "a",
    "rendezvous": "r",
    "pairing": "p",
    "dwell": "w",
    "trips": "t",
}


class _Delta(msgspec.Struct, rename=_SHORT):
    """The slots of a logged state that differ from the state after it; the others are left out."""

    last: Fix | UnsetType | None = UNSET
    fences: frozenset[str] | UnsetType = UNSET
    integrity: IntegrityState | UnsetType | None = UNSET
    motion: MotionState | UnsetType | None = UNSET
    geofence_pending: geofence.Pending | UnsetType = UNSET
    unexpected_stop: StopState | UnsetType | None = UNSET
    signal_lost: DarkState | UnsetType | None = UNSET
    post_inspection_access: AccessState | UnsetType | None = UNSET
    rendezvous: RendezvousState | UnsetType | None = UNSET
    pairing: PairingState | UnsetType | None = UNSET
    dwell: DwellState | UnsetType | None = UNSET
    trips: TripState | UnsetType | None = UNSET


_SLOTS = tuple(_Delta.__struct_fields__)
assert set(_SLOTS) == set(DeviceState.__struct_fields__) - {"device_id", "kind", "log"}, "a slot has no delta field"


class _Logged(msgspec.Struct, array_like=True):
    ping: Ping
    alerts: tuple[Alert, ...]
    updates: tuple[AlertUpdate, ...]
    before: _Delta


class _Stored(msgspec.Struct, array_like=True, omit_defaults=True):
    state: DeviceState  # without its log
    log: tuple[_Logged, ...] = ()


_ENCODER = msgspec.msgpack.Encoder(order="deterministic")  # sets sorted: equal states give equal bytes
_DECODER = msgspec.msgpack.Decoder(_Stored)


def _delta(before: DeviceState, after: DeviceState) -> _Delta:
    changed: dict[str, Any] = {}
    for name in _SLOTS:
        value = getattr(before, name)
        other = getattr(after, name)
        if value is not other and value != other:
            changed[name] = value
    return _Delta(**changed)


def encode(state: DeviceState) -> bytes:
    if not state.log:
        return _ENCODER.encode(_Stored(state))
    after = replace(state, log=())
    logged: list[_Logged] = []
    for entry in reversed(state.log):
        logged.append(_Logged(entry.ping, entry.alerts, entry.updates, _delta(entry.before, after)))
        after = entry.before
    logged.reverse()
    return _ENCODER.encode(_Stored(replace(state, log=()), tuple(logged)))


def decode(data: bytes) -> DeviceState:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not a valid state."""
    stored = _DECODER.decode(data)
    state = stored.state
    if not stored.log:
        return state
    entries: list[Entry] = []
    after = state
    for logged in reversed(stored.log):
        before = replace(after, log=())
        delta = logged.before
        for name in _SLOTS:
            value = getattr(delta, name)
            if value is not UNSET:
                setattr(before, name, value)
        entries.append(Entry(logged.ping, before, logged.alerts, logged.updates))
        after = before
    entries.reverse()
    state.log = tuple(entries)
    return state
