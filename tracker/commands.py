"""What the HTTP layer asks the single writer to do, as typed values.

Every change to the service's world (a fact for the core, a pairing, a registration) passes through
one task, so the in-memory state the core runs on and the database never disagree about order. The
API hands these commands to ``Service.submit`` and waits for them to be stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from geofences import FenceSet
from tracker.core.model import DeviceKind, Ignored, Inspection, Ping, Rejected

Item = Ping | Rejected | Ignored | Inspection
"""A decoded input: a fix, a customs decision, a dead letter or something to count and drop."""


@dataclass(frozen=True, slots=True)
class StoreFact:
    """A decoded input to run through the core and store, like a message from the broker.

    ``source`` is where it came from (``"api"``, ``"osmand"``); ``payload`` the raw bytes a dead
    letter keeps (at most ``max_payload_bytes``), ``None`` for anything else.
    """

    item: Item
    source: str
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class Pair:
    """Declare (``truck_id``) or end (``None``) the haul of a container tracker, effective ``at``."""

    container_id: str
    truck_id: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class RegisterDevice:
    """Register a device (or update one) and, for a container tracker, the container it rides on."""

    device_id: str
    kind: DeviceKind
    name: str | None = None
    container_no: str | None = None
    org: str | None = None  # None: keep the device's organisation (a new device: the default one)


@dataclass(frozen=True, slots=True)
class DeactivateDevice:
    """Stop accepting a device's fixes (its history stays); registering it again reactivates it."""

    device_id: str


@dataclass(frozen=True, slots=True)
class ChangeFences:
    """Make ``fence_set`` its port's fence set as a new version, provided ``base`` is still the newest one.

    The HTTP layer builds the whole new set (an upload, or the current set with one fence put or
    deleted) and says which version it built on; the single writer stores it and swaps the index
    between two batches, so no fix is judged half against the old set and half against the new.
    """

    fence_set: FenceSet
    base: int  # the version the change was built on (0: the port had none)
    author: str
    change: str  # upload | put | delete
    fence_id: str | None = None  # the fence a put or delete changed


Command = StoreFact | Pair | RegisterDevice | DeactivateDevice | ChangeFences
