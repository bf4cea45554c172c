"""Per-device state carried between fixes: typed, in memory, encoded only at the store.

Every detector keeps its own immutable msgspec Struct in its slot of :class:`DeviceState`. A
pipeline step copies the device's state once (a shallow copy: the detectors' own states are
immutable and shared) and fills the copy's slots in place, so the state before the step stays
intact for the reorder log and for the service, which adopts the copy only after its batch is
committed. The whole record is encoded once per batch by ``tracker.core.codec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from tracker.core import geofence
from tracker.core.dark import DarkState
from tracker.core.dwell import DwellState
from tracker.core.fix import Fix
from tracker.core.inspection import AccessState
from tracker.core.integrity import IntegrityState
from tracker.core.model import Alert, AlertUpdate, DeviceKind, Event, Ping
from tracker.core.motion import MotionState
from tracker.core.pairing import PairingState
from tracker.core.rendezvous import RendezvousState
from tracker.core.stops import StopState
from tracker.core.trips import TripState

__all__ = ["Declared", "DeviceState", "Entry", "Fix"]


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="fix"):
    """One recent fix of the reorder window (``tracker.core.reorder``): the fix, the state before it (without
    that state's own log) and what judging it raised, alerts and updates apart (only their alerts' order is
    ever used: a retraction follows it).

    The events are kept as far as a replay needs them: an alert by what identifies it (kind, device, key,
    time, severity, port, fence) for its retraction, which the store files by id, and an update by alert id,
    time and whether it closes. Message, evidence and fields are already stored with the event itself; kept
    here they would be most of the window's bytes. The fix is kept without its source and receive time, which
    no step reads (``tracker.core.codec`` does not store them either)."""

    ping: Ping
    before: DeviceState
    alerts: tuple[Alert, ...] = ()
    updates: tuple[AlertUpdate, ...] = ()

    @classmethod
    def of(cls, ping: Ping, before: DeviceState, events: tuple[Event, ...]) -> Entry:
        """The entry for ``ping`` judged from ``before``: the one place the window's fixes and events are slimmed
        (``Ping.bare``, ``Alert.slim``, built by their constructors: this runs on every fix)."""
        alerts: list[Alert] = []
        updates: list[AlertUpdate] = []
        for e in events:
            if isinstance(e, Alert):
                alerts.append(e.slim())
            else:
                updates.append(AlertUpdate(e.alert.slim(), e.ts, {}, e.closes))
        return cls(ping.bare(), before, tuple(alerts), tuple(updates))

    @property
    def events(self) -> tuple[Event, ...]:
        return (*self.alerts, *self.updates)


class Declared(msgspec.Struct, frozen=True, array_like=True, gc=False, tag="pair"):
    """A pairing declaration in the reorder window (``tracker.core.reorder``): the truck declared to haul the
    container (``None``: the haul ended) at ``at``, in the window at ``ts``, and the state before it (without
    its log).

    Kept so that a replay re-applies the declaration at its place: a late fix rewinds the device to a state
    before it, and without the entry the replay would judge the fixes after it on the pairing the declaration
    replaced. ``ts`` is ``at``, or the newest fix the window had judged when the declaration came if that is
    later: a declaration never re-judges fixes already judged. It shares the log with :class:`Entry`, hence
    the tags msgspec needs to tell them apart; no stored form holds them (the codec stores the state without
    its log, and the log in a layout of its own), so they change no byte of a row."""

    ts: datetime
    truck: str | None
    before: DeviceState
    at: datetime


class DeviceState(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """What the core remembers about one device; one slot per pipeline step or detector.

    Mutable only while a pipeline step builds it (see the module docstring); a state handed out of
    the pipeline is never changed again. Not tracked by the cyclic garbage collector (``gc=False``, as its
    log entries and the detectors' states): it holds values and earlier states, never itself, so it can be
    in no cycle, and tracking every state and window entry made collections a sixth of a replay's time.
    """

    device_id: str
    kind: DeviceKind = DeviceKind.TRUCK
    last: Fix | None = None
    fences: frozenset[str] = frozenset()
    integrity: IntegrityState | None = None
    motion: MotionState | None = None
    geofence_pending: geofence.Pending = frozenset()  # entries waiting for a confirming fix (and prism marks)
    unexpected_stop: StopState | None = None
    signal_lost: DarkState | None = None
    post_inspection_access: AccessState | None = None
    rendezvous: RendezvousState | None = None
    pairing: PairingState | None = None
    log: tuple[Entry | Declared, ...] = ()  # the reorder window's recent fixes and declarations (tracker.core.reorder)
    dwell: DwellState | None = None
    trips: TripState | None = None  # tracker.core.trips (not a detector: the pipeline calls it after them)
    last_speed: float | None = None  # m/s reported with ``last``, as far as its position bears it out (rules)

    def copy(self) -> DeviceState:
        """A shallow copy to fill in place (the detectors' states are immutable and shared; so is the log,
        which only ``tracker.core.reorder`` replaces)."""
        return msgspec.structs.replace(self)

    @classmethod
    def from_json(cls, device_id: str, data: Mapping[str, Any]) -> DeviceState:
        """The JSON form the store wrote before ``tracker.core.codec`` (read once after an upgrade)."""
        last = data.get("last")
        det: Mapping[str, Any] = data.get("detectors") or {}

        def part(name: str) -> Any:
            return det.get(name) or None

        stop, dark, access = part("unexpected_stop"), part("signal_lost"), part("post_inspection_access")
        motion, integrity = part("motion"), part("integrity")
        return cls(
            device_id=device_id,
            kind=DeviceKind(data.get("kind", "truck")),
            last=None if not last else Fix(datetime.fromisoformat(last["ts"]), float(last["lon"]), float(last["lat"])),
            fences=frozenset(data.get("fences", ())),
            integrity=None if integrity is None else IntegrityState.from_json(integrity),
            motion=None if motion is None else MotionState.from_json(motion),
            geofence_pending=frozenset(part("geofence_pending") or ()),
            unexpected_stop=None if stop is None else StopState.from_json(stop, device_id),
            signal_lost=None if dark is None else DarkState.from_json(dark, device_id),
            post_inspection_access=None if access is None else AccessState.from_json(access, device_id),
            rendezvous=None if part("rendezvous") is None else RendezvousState.from_json(part("rendezvous")),
            pairing=None if part("pairing") is None else PairingState.from_json(part("pairing")),
        )
