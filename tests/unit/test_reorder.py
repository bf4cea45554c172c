"""Out-of-order fixes inside the reorder window end up judged as if they had come in order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from geofences import FenceIndex, LocalProjection, load_fence_set
from tests.unit import synthetic
from tracker.core.geofence import GeofenceParams
from tracker.core.model import AlertUpdate, Event, Ping
from tracker.core.pipeline import Params, Pipeline
from tracker.core.reorder import REORDERED, Reorderer, effective_alerts
from tracker.core.state import DeviceState, Entry

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PROJ = LocalProjection(-46.33, -23.92)


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[list[float]]]:
    return synthetic.square(PROJ, x0, y0, x1, y1)


def index() -> FenceIndex:
    doc = {
        "type": "FeatureCollection",
        "port": "testport",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": "R1", "name": "Vacant lot", "kind": "restricted"},
                "geometry": {"type": "Polygon", "coordinates": square(0, 0, 200, 200)},
            },
            {
                "type": "Feature",
                "properties": {"id": "B", "name": "Port", "kind": "port_boundary"},
                "geometry": {"type": "Polygon", "coordinates": square(-3000, -3000, 3000, 3000)},
            },
        ],
    }
    return FenceIndex(load_fence_set(doc).fences)


def fix(seconds: float, x: float, y: float) -> Ping:
    lon, lat = PROJ.to_lonlat(x, y)
    return Ping("TRK-1", T0 + timedelta(seconds=seconds), float(lon), float(lat))


def feed(pings: list[Ping], window_s: float = 30.0) -> tuple[DeviceState, list[Event], list[tuple[str, ...]]]:
    raw = Params(geofence=GeofenceParams(confirm_entry_kinds=frozenset()))  # entries on the first fix inside
    reorderer = Reorderer(Pipeline(index(), raw), window_s)
    state = DeviceState("TRK-1")
    events: list[Event] = []
    flags: list[tuple[str, ...]] = []
    for p in pings:
        result = reorderer.step(state, p)
        state = result.state
        events.extend(result.alerts)
        flags.append(result.flags)
    return state, events, flags


def test_late_fix_inside_window_moves_the_entry_to_its_true_time() -> None:
    in_order = [fix(0, -60, 100), fix(10, -20, 100), fix(20, 20, 100), fix(30, 60, 100)]
    shuffled = [in_order[0], in_order[1], in_order[3], in_order[2]]
    _, ordered_events, _ = feed(in_order)
    state, events, flags = feed(shuffled)
    assert flags[3] == (REORDERED,)
    want = effective_alerts(ordered_events)
    got = effective_alerts(events)
    assert got.keys() == want.keys()
    assert [a.ts for a in got.values() if a.fence_id == "R1"] == [T0 + timedelta(seconds=20)]
    # the speculative entry at t=30 was raised, then retracted
    retracted = [e for e in events if isinstance(e, AlertUpdate) and e.fields.get("retracted")]
    assert len(retracted) == 1
    assert state.last is not None
    assert state.last.ts == T0 + timedelta(seconds=30)


def test_fix_later_than_the_window_is_only_flagged() -> None:
    pings = [fix(0, -60, 100), fix(60, 60, 100), fix(10, -20, 100)]
    _, events, flags = feed(pings)
    assert flags[2] == ("late",)
    assert [e.ts for e in effective_alerts(events).values() if e.fence_id == "R1"] == [T0 + timedelta(seconds=60)]


def test_redelivered_fix_changes_nothing() -> None:
    pings = [fix(0, -60, 100), fix(10, 20, 100), fix(20, 60, 100), fix(10, 20, 100)]
    _, events, flags = feed(pings)
    assert flags[3] == ("duplicate_ts",)
    assert len([a for a in effective_alerts(events).values() if a.fence_id == "R1"]) == 1


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-150, 350), st.floats(-150, 350)), min_size=2, max_size=40),
    st.integers(0, 2**32 - 1),
)
def test_shuffling_within_the_window_gives_the_same_alerts(points: list[tuple[float, float]], seed: int) -> None:
    # fixes every 5 s moving at most ~100 m/s; delivery shuffled by at most 25 s of event time
    pings = [fix(i * 5, x, y) for i, (x, y) in enumerate(points)]
    rng = random.Random(seed)
    delivered = sorted(pings, key=lambda p: p.ts + timedelta(seconds=rng.uniform(0, 25)))
    ordered_state, ordered_events, _ = feed(pings)
    state, events, _ = feed(delivered)
    assert effective_alerts(events).keys() == effective_alerts(ordered_events).keys()
    assert state == ordered_state


def test_a_fast_reporter_keeps_at_most_max_fixes_and_a_fix_older_than_them_is_only_flagged_late() -> None:
    """At two fixes a second the 30 s window would hold 60 entries: it keeps MAX_FIXES. A straggler newer than
    the oldest kept entry is still replayed in its place; one older than it (newer fixes were dropped, so a
    replay could not put it before them) is stored and flagged late, never replayed out of order."""
    from tracker.core.reorder import MAX_FIXES

    pings = [fix(0.5 * i, -500.0 + i, -500.0) for i in range(40)]
    state, _, _ = feed(pings)
    assert len(state.log) == MAX_FIXES
    assert [e.ping.ts for e in state.log if isinstance(e, Entry)] == [p.ts for p in pings[-MAX_FIXES:]]
    inside = fix(0.5 * (40 - MAX_FIXES) + 0.25, -500.0, -500.0)  # just after the oldest kept entry
    state_in, _, flags_in = feed([*pings, inside])
    assert flags_in[-1] == (REORDERED,)
    assert len(state_in.log) == MAX_FIXES
    older = fix(0.5 * (40 - MAX_FIXES) - 0.25, -500.0, -500.0)  # within 30 s, but before the oldest kept entry
    state_old, _, flags_old = feed([*pings, older])
    assert REORDERED not in flags_old[-1]
    assert [e.ping.ts for e in state_old.log if isinstance(e, Entry)] == [p.ts for p in pings[-MAX_FIXES:]]
