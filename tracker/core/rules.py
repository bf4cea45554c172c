"""The rules several detectors apply to the same facts, written once.

Three questions are asked by more than one detector: has a device stood still long enough for its stop
to matter (``tracker.core.stops`` and the access window of ``tracker.core.inspection``), has a tracker been
silent longer than its rhythm allows (``tracker.core.dark`` and the window), and is another device standing
alongside (``tracker.core.rendezvous`` and the window). Each detector decides *where* and *for whom* the
question matters (inside the port, after a clearance, which thresholds); the answer itself must be the same
everywhere, or an officer reading a ``signal_lost`` and a ``post_inspection_access`` ``dark`` raised on one
silence would find them judging it by two different arithmetics. So the comparisons, the interval learning
and the "who is standing here and since when" test live here, as pure functions of plain values, and the
detectors call them instead of keeping copies that drift apart.

Every "longer than" is strict and every "at least" inclusive, as in the detectors' parameter docs, and all
durations are compared as float seconds (``timedelta.total_seconds()``), the form ``detector.first_after``
inverts for the timers: a rule and the due time of its tick cannot disagree about the crossing instant.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from geofences import haversine_m
from tracker.core.detector import Motion, first_after
from tracker.core.fix import Fix
from tracker.core.motion import holds
from tracker.core.world import Position

__all__ = [
    "ROLLING_MS",
    "clip_interval",
    "learn_interval",
    "median_interval",
    "median_silence_limit",
    "met",
    "rolling",
    "silence_due",
    "silence_limit",
    "silent",
    "standing_since",
    "stood_long_enough",
    "stop_ended",
    "stop_evidence",
    "together_since",
]

ROLLING_MS = 2.0
"""A fix reporting more than this (m/s) is never time spent standing still (a parked tracker's Doppler speed is far
below it); the same bound as ``[detectors.rendezvous] moving_speed_ms``."""


# ---------------------------------------------------------------- standing still (the stop rule)


def stop_ended(followed_since: datetime | None, motion: Motion) -> bool:
    """Whether the stop a detector follows (its ``stationary_since``) is over at this fix.

    The motion model restarts its stationary period when the device leaves its cluster, so a different
    start (or none: moving) means a different stop, whatever the fences say.
    """
    return motion.stationary_since != followed_since


def stop_evidence(motion: Motion, lon: float, lat: float) -> bool:
    """Whether this fix is evidence of more standing still: stationary, and inside the stop's cluster.

    The single fix that may be the departure (outside the cluster, held pending by the motion model) must
    not add its time to the stop: a truck that drives off after 4 min 50 s did not stand for five minutes.
    """
    return motion.stationary_since is not None and holds(motion, lon, lat)


STILL_M = 15.0
"""Two fixes closer than this are one spot as far as GNSS noise goes (a parked tracker wanders a few metres)."""


def rolling(
    speed: float | None, lon: float, lat: float, ts: datetime, previous: Fix | None, moved: float | None = None
) -> bool:
    """Whether a fix is at road speed (above :data:`ROLLING_MS`): a device on the move whatever its cluster says.

    Such a fix is no evidence of standing still and does not start the time a stop is measured by: a stop whose
    cluster was seeded by a rolling fix (a truck slowing into a slot, its last fix at speed a few metres off) stands
    from its first fix that does not roll. A fix without a speed is judged by the motion model alone.

    The reported speed is the tracker's word, so it does not count when the position contradicts it: a fix within
    :data:`STILL_M` of the one before, at a chord speed under half the bound, stood still whatever it says. Otherwise
    a tracker standing still while reporting 8 m/s on every fix would switch the stop rules off (a cleared container
    left unwatched in a vacant lot). A sparse tracker creeping 40 m through a gate queue in five minutes, both fixes
    at speed, still rolls. ``moved``: ``haversine_m`` from ``previous`` to the fix, when the caller measured it
    (``FixContext.hop_m``).
    """
    if speed is None or speed <= ROLLING_MS:
        return False
    return not _stood(lon, lat, ts, previous, moved)


def believed_speed(
    speed: float | None, lon: float, lat: float, ts: datetime, previous: Fix | None, moved: float | None = None
) -> float | None:
    """The reported speed as far as the position bears it out: ``None`` (no word) for a road speed the fix
    contradicts, as :func:`rolling` judges it.

    What the world view keeps of a device's speed, and what the meeting rules read: a truck and a box standing
    together in a vacant lot, both reporting 8 m/s, are standing together. Kept in the device's state
    (``DeviceState.last_speed``), so a restarted engine judges meetings on the very speeds a running one does.
    ``moved``: ``haversine_m`` from ``previous`` to the fix, when the caller measured it.
    """
    if speed is None or speed <= ROLLING_MS or not _stood(lon, lat, ts, previous, moved):
        return speed
    return None


def _stood(lon: float, lat: float, ts: datetime, previous: Fix | None, moved: float | None = None) -> bool:
    """A fix within :data:`STILL_M` of the one before, at a chord speed under half of :data:`ROLLING_MS`."""
    if previous is None:
        return False
    dt = (ts - previous.ts).total_seconds()
    if dt <= 0:
        return False
    if moved is None:
        moved = haversine_m(previous.lon, previous.lat, lon, lat)
    return moved < STILL_M and moved / dt < ROLLING_MS / 2


def stood_long_enough(start: datetime, ts: datetime, limit_s: float) -> bool:
    """A stop counted from ``start`` has lasted at least ``limit_s`` at ``ts`` (inclusive: "at least")."""
    return (ts - start).total_seconds() >= limit_s


# ---------------------------------------------------------------- silence (the going-dark rule)


def clip_interval(gap_s: float, floor_s: float, ceiling_s: float) -> float:
    """An interval between two fixes as it is learned: a retry burst or a day asleep cannot set the rhythm."""
    return min(ceiling_s, max(floor_s, gap_s))


def learn_interval(
    intervals: tuple[float, ...], gap_s: float, *, floor_s: float, ceiling_s: float, history: int
) -> tuple[float, ...]:
    """The recent intervals with this one appended (clipped), the oldest forgotten beyond ``history``."""
    return (*intervals, clip_interval(gap_s, floor_s, ceiling_s))[-history:]


def median(values: tuple[float, ...]) -> float:
    """``statistics.median`` of a non-empty tuple, to the same float: the same sort and the same middle (or mean
    of the two middle values), without that function's generality, which cost more than the sort on every fix."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise statistics.StatisticsError("no median for empty data")
    i = n // 2
    return float(data[i]) if n % 2 else float((data[i - 1] + data[i]) / 2)


def median_interval(intervals: tuple[float, ...]) -> float | None:
    """The tracker's rhythm from its recent intervals: a median, so one tunnel or one burst does not move it."""
    return median(intervals) if intervals else None


def silence_limit(expected_s: float | None, k: float, floor_s: float) -> float:
    """Seconds of silence after which a tracker counts as dark: ``k`` missed reports, never below ``floor_s``.

    ``expected_s`` None: the rhythm is not known, the floor alone applies.
    """
    return floor_s if expected_s is None else max(floor_s, k * expected_s)


def median_silence_limit(intervals: tuple[float, ...], k: float, floor_s: float) -> float:
    """``silence_limit(median(intervals), k, floor_s)`` for a non-empty tuple, to the same float.

    Asked at every due time of a device whose rhythm is learned. No median exceeds the largest value (the mean of
    the two middle ones neither: rounding is monotone), so when ``k`` times that is within the floor, as for a truck
    reporting every 10 to 30 s, the floor is the limit without a sort."""
    if k * max(intervals) <= floor_s:
        return floor_s
    return max(floor_s, k * median(intervals))


def silent(since: datetime, now: datetime, limit_s: float) -> bool:
    """Silent for longer than ``limit_s`` (strict: a fix exactly on the limit is on time)."""
    return (now - since).total_seconds() > limit_s


def silence_due(since: datetime, limit_s: float) -> datetime:
    """The first instant :func:`silent` holds: when a tick must look (never late, see ``detector.Timed``)."""
    return first_after(since, limit_s)


# ---------------------------------------------------------------- alongside (the meeting rule)


def standing_since(other: Position, still_speed_ms: float | None = None) -> datetime | None:
    """Since when a neighbour has stood outside every authorised stop zone; None if it moves or stands in one.

    Its stop's ``outside_since`` (``tracker.core.motion``) counts, unless its latest fix lies in an
    authorised zone. ``still_speed_ms``: a neighbour with a single fix here (a sparse tracker has given no
    second fix to prove it stands) counts as standing from that fix when it reported at most this speed; None
    (the rendezvous rule) waits for the motion model to see it stand.
    """
    if other.authorized:
        return None
    if other.outside_since is not None:
        return other.outside_since
    if still_speed_ms is not None and other.stationary_since is None:
        return other.ts if other.speed is not None and other.speed <= still_speed_ms else None
    return None


def together_since(own_since: datetime, other_since: datetime, not_before: datetime | None = None) -> datetime:
    """Two devices have stood together since the later of their own starts (and never before ``not_before``)."""
    since = max(own_since, other_since)
    return since if not_before is None else max(since, not_before)


def met(since: datetime, at: datetime, min_s: float) -> bool:
    """Together for longer than ``min_s`` (strict): a meeting, not a wait at a junction."""
    return (at - since).total_seconds() > min_s
