"""The one fix every part of the core remembers: when and where a device was last accepted."""

from __future__ import annotations

from datetime import datetime

import msgspec

from tracker.core.model import Ping


class Fix(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The last fix the live detectors accepted (not merely the last one received).

    A msgspec Struct like every other piece of per-device state: three slots in memory and a
    three-item array in the stored state (see ``tracker.core.codec``).
    """

    ts: datetime
    lon: float
    lat: float

    @classmethod
    def of(cls, ping: Ping) -> Fix:
        return cls(ping.ts, ping.lon, ping.lat)
