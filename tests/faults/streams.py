"""Streams of known content for the fault scenarios, and what the service must make of them.

A scenario can only say "nothing lost, nothing doubled" if it knows exactly what it sent. A
:class:`Stream` is fully determined by its parameters: device ids, one fix per device per
second of event time, positions. Most devices are trucks driving outside every Santos fence
(they raise nothing); a few are *intruders* that walk into a restricted fence at staggered
moments and stay there, so geofence entries and restricted-zone stops fire at known fixes,
some before a fault and some after it.

The alerts a stream must raise are not typed in by hand: :meth:`Stream.expected_alerts`
feeds the very same payloads, decoded by the service's own decoder, through the pure core
(``tracker.core.engine.Engine``) with nothing in between. A fault may change *when* the
service raises an alert, never *which* alerts (their ids are derived from what makes them
unique) nor how many.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from geofences import FenceKind, LocalProjection, load_fence_set
from tests.faults.harness import SANTOS, Message
from tracker.adapters.decode import Limits, decode_inspection, decode_mqtt
from tracker.core import iso6346
from tracker.core.engine import Engine
from tracker.core.model import Alert, Ping
from tracker.core.pipeline import Params, Pipeline
from tracker.service import Fences
from tracker.sim import spots

HYSTERESIS_M = 25.0  # the service's defaults (TRACKER_HYSTERESIS_M, TRACKER_ENTRY_MARGIN_M)
ENTRY_MARGIN_M = 10.0
OUTSIDE_LAT = -24.30  # ~35 km south of the port: no fence anywhere near
OUTSIDE_LON = -46.20

WALK_STEPS = 10  # an intruder walks the 100 m into its fence at 10 m/s
LonLat = tuple[float, float]
CONTAINER_NO = "MSCU663987" + str(iso6346.check_digit("MSCU663987"))


def _fences() -> Fences:
    return Fences.build([load_fence_set(SANTOS)], HYSTERESIS_M, ENTRY_MARGIN_M)


def restricted_spots(inset_m: float = 20.0, spacing_m: float = 40.0) -> list[tuple[str, LonLat]]:
    """Points well inside Santos's restricted fences, ``spacing_m`` apart (farther than the 30 m at which
    two standing devices would make a rendezvous), each inside only its restricted fence and the port."""
    return spots.restricted_spots((f for fs in _fences().sets.values() for f in fs.fences), inset_m, spacing_m)


def _approach(spot: LonLat, fence_id: str, distance_m: float = 100.0) -> LonLat:
    """A point ``distance_m`` from ``spot`` and clear of its restricted fence, where the intruder waits."""
    fences = _fences()
    proj = LocalProjection(spot[0], spot[1])
    for k in range(16):
        angle = 2 * math.pi * k / 16
        lon, lat = proj.to_lonlat(distance_m * math.cos(angle), distance_m * math.sin(angle))
        point = (float(lon), float(lat))
        inside = fences.index.fences_at([point[0]], [point[1]])[0]
        if not any(fences.index.get(f).kind is FenceKind.RESTRICTED for f in inside):
            return point
    raise AssertionError(f"no approach point outside {fence_id} around {spot}")


@dataclass(frozen=True)
class Stream:
    """``devices`` trackers × ``steps`` fixes, one per device per second of event time from ``t0``.

    Published step by step (every device's fix of second 0, then second 1...), which is also
    event-time order. Device ids are ``{prefix}-NNNN``; the first ``intruders`` of them are
    intruders (see the module docstring), the rest drive east outside the port.
    """

    prefix: str
    devices: int
    steps: int
    t0: int
    intruders: int = 0

    def __post_init__(self) -> None:
        assert self.intruders <= self.devices

    def device(self, d: int) -> str:
        return f"{self.prefix}-{d:04d}"

    @property
    def like(self) -> str:
        """SQL LIKE pattern matching this stream's device ids."""
        return f"{self.prefix}-%"

    @property
    def size(self) -> int:
        return self.devices * self.steps

    @cached_property
    def _tracks(self) -> list[tuple[LonLat, LonLat, int]]:
        """Per intruder: where it waits, where it stands inside the fence, and the step it sets off."""
        spots = restricted_spots()
        if self.intruders > len(spots):
            raise AssertionError(f"only {len(spots)} spots for {self.intruders} intruders")
        out = []
        for j in range(self.intruders):
            fence_id, spot = spots[j]
            # entries spread over the first 70 % of the stream: some before a fault, some after
            depart = 5 + (j * int(self.steps * 0.7)) // max(1, self.intruders)
            out.append((_approach(spot, fence_id), spot, depart))
        return out

    def settled_inside(self, j: int) -> int:
        """The step from which intruder ``j`` has stood inside its fence for two fixes (entry confirmed)."""
        return self._tracks[j][2] + WALK_STEPS + 2

    def position(self, d: int, step: int) -> tuple[LonLat, float]:
        """(lon, lat) and speed (m/s) of device ``d`` at ``step``."""
        if d >= self.intruders:
            return (OUTSIDE_LON + step * 1e-4, OUTSIDE_LAT + d * 1e-3), 10.0
        wait, spot, depart = self._tracks[d]
        if step <= depart:
            where, speed = wait, 0.0
        elif step < depart + WALK_STEPS:
            f = (step - depart) / WALK_STEPS
            where, speed = (wait[0] + f * (spot[0] - wait[0]), wait[1] + f * (spot[1] - wait[1])), 10.0
        else:
            where, speed = spot, 0.0
        # a standing tracker's fixes wander by a metre or so, as real ones do
        jitter = 1e-5 * (((d * 7919 + step * 104729) % 21) - 10) / 10
        return (where[0] + jitter, where[1] - jitter), speed

    def message(self, d: int, step: int) -> Message:
        (lon, lat), speed = self.position(d, step)
        body = {"ts": self.t0 + step, "lat": round(lat, 7), "lon": round(lon, 7), "speed": speed}
        return (f"trackers/{self.device(d)}/ping", json.dumps(body).encode(), False)

    def messages(self) -> list[Message]:
        return [self.message(d, step) for step in range(self.steps) for d in range(self.devices)]

    def keys(self) -> set[tuple[str, datetime]]:
        """(device_id, ts) of every fix: the primary key of what must end up in ``pings``."""
        return {
            (self.device(d), datetime.fromtimestamp(self.t0 + step, UTC))
            for step in range(self.steps)
            for d in range(self.devices)
        }

    def expected_alerts(self) -> dict[str, Alert]:
        """Alert id → alert, as the pure core raises them from these payloads, in order, without faults.

        Timers are not run (the scenarios run the service with ticks far apart): what a timer raises
        depends on the wall clock, which a fault shifts by design; here only the content counts.
        """
        now = datetime.fromtimestamp(self.t0 + self.steps + 60, UTC)
        engine = Engine(Pipeline(_fences().index, Params()), tick_every_s=10 * 86400.0)
        for topic, payload, _retain in self.messages():
            item = decode_mqtt(topic, payload, now, Limits())
            assert isinstance(item, Ping), (topic, payload, item)
            engine.feed(item)
        return {str(e.event.id): e.event for e in engine.emitted if isinstance(e.event, Alert)}


def stream_t0(steps: int, now: datetime | None = None) -> int:
    """An event-time start such that the whole stream lies in the past, well inside the decoder's limits."""
    at = now or datetime.now(UTC)
    return int(at.timestamp()) - steps - 120


# ---- load at a set pace ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PacedLoad:
    """``count`` fixes from ``devices`` trucks outside the port, fix ``i`` stamped ``start + i / rate``:
    published at that pace, a fix's event time is when it was sent, so commit time minus event time
    is the service's lag."""

    prefix: str
    devices: int
    count: int
    rate: float
    start: float
    first: int = 0
    """Index of the first fix in the devices' sequence (a load that continues an earlier one goes on from there)."""

    def messages(self) -> list[Message]:
        out: list[Message] = []
        for i in range(self.count):
            d, k = (self.first + i) % self.devices, (self.first + i) // self.devices
            body = {
                "ts": round(self.start + i / self.rate, 3),
                "lat": round(OUTSIDE_LAT - 0.05 - d * 1e-3, 7),
                "lon": round(OUTSIDE_LON + k * 1e-5, 7),
            }
            out.append((f"trackers/{self.prefix}-{d:04d}/ping", json.dumps(body).encode(), False))
        return out


# ---- poison ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoisonKind:
    """One kind of bad input: ``make(i)`` gives the i-th message of the kind.

    Every message of a kind goes to topics only that kind uses (see :attr:`topic_like`), so dead
    letters can be counted per kind from the topic they were stored with.
    """

    name: str
    make: Callable[[int], Message]
    topic_like: str
    may_be_ignored: bool = False
    """Well-formed enough to be counted as an ignored message (tracker_messages_ignored) instead of a dead letter."""
    payload_marker: bytes = b""
    """Bytes every payload of the kind contains, where its topic is shared with other inputs (customs)."""


def _native(code: str, body: bytes | Callable[[int], bytes], devices: int = 10) -> tuple[Callable[[int], Message], str]:
    def make(i: int) -> Message:
        payload = body(i) if callable(body) else body
        return (f"trackers/{code}-{i % devices}/ping", payload, False)

    return make, f"trackers/{code}-%"


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def poison_kinds(prefix: str, now: float) -> list[PoisonKind]:
    """Twenty kinds of bad input, each a dead letter (or an ignored message) and never a stopped ingest.

    ``prefix`` keeps the topics of one scenario apart; ``now`` is the wall time the payloads are
    made at (for "future" and "recent" timestamps).
    """
    p = prefix
    recent = int(now) - 600
    digits = "1" * 5000
    kinds: list[PoisonKind] = []

    def add(name: str, code: str, body: bytes | Callable[[int], bytes], *, ignored: bool = False) -> None:
        make, like = _native(f"{p}{code}", body)
        kinds.append(PoisonKind(name, make, like, ignored))

    # timestamps whose conversion to UTC leaves the range of datetime
    add("ts_9999_minus_12h", "T99", b'{"ts":"9999-12-31T23:59:59-12:00","lat":-24.3,"lon":-46.2}')
    add("ts_0001_plus_1h", "T01", b'{"ts":"0001-01-01T00:00:00+01:00","lat":-24.3,"lon":-46.2}')

    def owntracks_0001(i: int) -> Message:
        body = b'{"_type":"location","tst":"0001-01-01T00:00:00+01:00","lat":-24.3,"lon":-46.2}'
        return (f"owntracks/{p.lower()}o01/d{i % 10}", body, False)

    kinds.append(PoisonKind("owntracks_tst_0001", owntracks_0001, f"owntracks/{p.lower()}o01/%"))

    def customs_0001(i: int) -> Message:
        body = {"container_no": CONTAINER_NO, "result": "cleared", "ts": "0001-01-01T00:00:00+01:00"}
        return ("customs/inspections", _j({**body, "inspection_id": f"{p}-C01-{i}"}), False)

    kinds.append(
        PoisonKind("customs_ts_0001", customs_0001, "customs/inspections", payload_marker=f'"{p}-C01-'.encode())
    )
    # JSON the parser refuses in other ways than JSONDecodeError
    add("int_5000_digits", "I5K", f'{{"ts":{digits},"lat":-24.3,"lon":-46.2}}'.encode())
    add("json_10k_deep", "DEEP", b"[" * 10_000 + b"]" * 10_000)

    def owntracks_surrogate(i: int) -> Message:
        return (f"owntracks/{p.lower()}sur/d{i % 10}", b'{"_type":"\\ud800","lat":-24.3,"lon":-46.2}', False)

    kinds.append(PoisonKind("owntracks_type_lone_surrogate", owntracks_surrogate, f"owntracks/{p.lower()}sur/%", True))
    add("nan_lat", "NAN", lambda i: f'{{"ts":{recent + i},"lat":NaN,"lon":-46.2}}'.encode())
    add("infinity_lon", "INF", lambda i: f'{{"ts":{recent + i},"lat":-24.3,"lon":-Infinity}}'.encode())
    add("not_utf8", "UTF", b'{"ts":1700000000,"lat":-24.3,"lon":-46.2,"note":"\xff\xfe\xc3\x28"}')
    add("empty_payload", "EMP", b"")
    add("oversize_70k", "BIG", lambda i: _j({"ts": recent + i, "lat": -24.3, "lon": -46.2, "pad": "x" * 70_000}))
    add("lat_out_of_range", "LAT", lambda i: _j({"ts": recent + i, "lat": 91.5, "lon": -46.2}))
    add("null_island", "ZERO", lambda i: _j({"ts": recent + i, "lat": 0, "lon": 0}))
    add("future_ts", "FUT", lambda i: _j({"ts": int(now) + 86_400 + i, "lat": -24.3, "lon": -46.2}))
    add("unknown_device", "UNK", lambda i: _j({"ts": recent + i, "lat": -24.3, "lon": -46.2}))
    add("array_not_object", "ARR", lambda i: _j([recent + i, -24.3, -46.2]))
    add("wrong_types", "TYP", lambda i: _j({"ts": True, "lat": "north", "lon": {"deg": -46}}))
    add("unknown_sensor_event", "EVT", lambda i: _j({"ts": recent + i, "lat": -24.3, "lon": -46.2, "events": ["x"]}))

    # retained on a ping topic of its own: the broker hands it to every new subscription
    def retained(i: int) -> Message:
        return (f"trackers/{p}RET-{i}/ping", b'{"retained": "poison", "ts": "soon"}', True)

    kinds.append(PoisonKind("retained_poison", retained, f"trackers/{p}RET-%"))
    assert len(kinds) == 20, len(kinds)
    return kinds


def poison_messages(kinds: list[PoisonKind], per_kind: int) -> list[tuple[str, Message]]:
    return [(k.name, k.make(i)) for k in kinds for i in range(per_kind)]


def interleave(good: list[Message], bad: list[tuple[str, Message]], seed: int = 7) -> list[Message]:
    """Bad messages scattered among the good ones; good ones keep their order (seeded: the same every run)."""
    rng = random.Random(seed)
    slots = sorted(rng.randrange(len(good) + 1) for _ in bad)
    shuffled = [m for _, m in bad]
    rng.shuffle(shuffled)
    out: list[Message] = []
    j = 0
    for i, msg in enumerate(good):
        while j < len(slots) and slots[j] == i:
            out.append(shuffled[j])
            j += 1
        out.append(msg)
    out.extend(shuffled[j:])
    return out


def decodes_as_rejected(kind: PoisonKind, now: datetime) -> bool:
    """Sanity check of a kind itself: the decoder must not take it for a valid fix (if it did, the
    scenario would be counting a good message as poison). Exceptions count as 'not a fix'."""
    topic, payload, _ = kind.make(0)
    try:
        if topic == "customs/inspections":
            item: object = decode_inspection(payload, now, Limits())
            return not hasattr(item, "container_no")
        item = decode_mqtt(topic, payload, now, Limits())
    except Exception:
        return True
    return not isinstance(item, Ping) or kind.name == "unknown_device"


def ts_of(now: float, seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(now, UTC) - timedelta(seconds=seconds_ago)
